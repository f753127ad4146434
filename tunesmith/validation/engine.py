"""How checks run: an ephemeral GX context, one suite + validation definition per batch,
and Data Docs built into a local folder."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from tunesmith.validation.suites import Batch


def _context(docs_dir: Path) -> Any:
    """Ephemeral context (nothing persisted but the Data Docs), offline, no progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites={"local": site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_batches(
    dataset: str, batches: list[Batch], docs_dir: Path, n_examples: int
) -> list[tuple[Batch, Any]]:
    """Validate each batch with its own suite; return (batch, GX suite result) pairs.

    Results use the SUMMARY format capped at `n_examples` offending rows, so a failure on a
    million rows costs a few list entries rather than a million (COMPLETE would list all).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(docs_dir)
    source = context.data_sources.add_pandas(f"{dataset}_clean")
    # One run id groups every batch of this validation under one run in Data Docs.
    run_id = RunIdentifier(run_name=dataset, run_time=dt.datetime.now(dt.UTC))
    results = []
    for batch in batches:
        definition = source.add_dataframe_asset(batch.name).add_batch_definition_whole_dataframe(
            batch.name
        )
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"{dataset}.{batch.name}", expectations=batch.expectations)
        )
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{dataset}.{batch.name}", data=definition, suite=suite)
        )
        fmt: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": n_examples}
        if batch.row_id:
            fmt["unexpected_index_column_names"] = batch.row_id
        result = validation.run(
            batch_parameters={"dataframe": batch.frame}, result_format=fmt, run_id=run_id
        )
        results.append((batch, result))
    # Pages of an earlier run would stay listed next to this one's otherwise.
    shutil.rmtree(docs_dir, ignore_errors=True)
    context.build_data_docs()
    return results
