"""Data validation with Great Expectations: suites per task type, run on the clean splits.

`run_validation(cfg)` reads `cfg.dirs.clean/{train,val,test}.parquet`, runs one GX suite per
batch (each split, plus derived cross-split frames), builds Data Docs and writes
`result.json` + `summary.md` under `cfg.dirs.validation`. GX is imported only inside the
functions that use it, so `import tunesmith.validation` works on a training machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tunesmith.cleaning import frame_digest
from tunesmith.config import Config
from tunesmith.errors import DataError
from tunesmith.validation import report
from tunesmith.validation.suites import SPLITS


@dataclass
class Outcome:
    """What a validation found; the detail is in `result_path` and `summary_path`."""

    success: bool
    n_expectations: int
    n_failed: int
    failures: list[str]  # one line per failed expectation
    headline: str  # the whole story in one line, for an error message
    result_path: Path
    summary_path: Path
    docs_index: Path
    digests: dict[str, str]  # of the splits it judged


def load_splits(cfg: Config) -> dict[str, pd.DataFrame]:
    """The clean splits, with a default 0..n-1 index so GX row numbers are file positions."""
    frames = {}
    for split in SPLITS:
        path = cfg.dirs.clean / f"{split}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: not found; run `tunesmith step clean --dataset {cfg.name}`")
        try:
            frames[split] = pd.read_parquet(path).reset_index(drop=True)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: unreadable parquet: {exc}") from exc
    return frames


def run_validation(cfg: Config, suite: Callable[[Config, dict], list]) -> Outcome:
    """Run `suite` (the task type's batches) on the clean splits; write result.json,
    summary.md and the Data Docs."""
    from tunesmith.validation.engine import run_batches

    frames = load_splits(cfg)
    out = cfg.dirs.validation
    out.mkdir(parents=True, exist_ok=True)
    docs_dir = out / "data_docs"
    results = run_batches(cfg.name, suite(cfg, frames), docs_dir, cfg.validate_.n_examples)

    records = [report.record(b, r) for b, res in results for r in res.results]
    failures = [report.failure_line(r) for r in records if not r["success"]]
    rows = {s: len(f) for s, f in frames.items()}
    outcome = Outcome(
        success=not failures, n_expectations=len(records), n_failed=len(failures),
        failures=failures, result_path=out / "result.json", summary_path=out / "summary.md",
        docs_index=docs_dir / "index.html",
        digests={split: frame_digest(f) for split, f in frames.items()},
        headline=report.headline(cfg.name, records, out / "summary.md"),
    )
    report.write_json(outcome.result_path, {
        "dataset": cfg.name, "task": cfg.task, "success": outcome.success,
        "n_expectations": outcome.n_expectations, "n_failed": outcome.n_failed, "rows": rows,
        "failures": failures, "data_docs": str(outcome.docs_index), "expectations": records,
        "gx": {b.name: res.to_json_dict() for b, res in results},
    })
    outcome.summary_path.write_text(
        report.summary_markdown(cfg.name, records, rows, outcome.docs_index), encoding="utf-8"
    )
    return outcome
