"""Step `validate`: Great Expectations on the clean splits; a failure stops the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.config import Config
from tunesmith.errors import ValidationFailed


@dataclass
class ValidateResult:
    """Counts and one-line failures; the per-row detail is in `report_path` / `summary_path`."""

    success: bool
    n_expectations: int
    n_failed: int
    failures: list[str]
    report_path: Path  # cfg.dirs.validation/result.json
    summary_path: Path  # cfg.dirs.validation/summary.md (markdown table)
    docs_index: Path  # Data Docs entry page


def validate(cfg: Config, raise_on_failure: bool = True) -> ValidateResult:
    """Validate `cfg.dirs.clean/*.parquet`; raise ValidationFailed (one line) if any check fails.

    The reports are written before raising, so callers can still show summary.md.
    `raise_on_failure=False` returns the failed result instead (`tunesmith dataset check`).
    """
    from tunesmith.validation import run_validation

    outcome = run_validation(cfg)
    result = ValidateResult(
        success=outcome.success, n_expectations=outcome.n_expectations,
        n_failed=outcome.n_failed, failures=outcome.failures,
        report_path=outcome.result_path, summary_path=outcome.summary_path,
        docs_index=outcome.docs_index,
    )
    if not result.success and raise_on_failure:
        raise ValidationFailed(outcome.headline)
    return result

