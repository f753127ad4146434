"""Step `validate`: Great Expectations on the clean splits; a failure stops the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config import Config
from tunesmith.errors import ValidationFailed
from tunesmith.jsonio import write_json
from tunesmith.logged import Logged, relative
from tunesmith.steps import narrowed, task_of

# The folder's marker: success and the data it judged, nothing that changes run to run
# (result.json and Data Docs carry GX's timestamps), so tokenize re-runs only when the
# verdict or the data changed.
VERDICT = "verdict.json"


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
    logged: Logged = field(default_factory=Logged, repr=False)


@narrowed
def validate(cfg: Config, raise_on_failure: bool = True) -> ValidateResult:
    """Validate `cfg.dirs.clean/*.parquet`; raise ValidationFailed (one line) if any check fails.

    The reports are written before raising, so callers can still show summary.md, and the
    exception carries the step's `logged` record (the runner logs the failed report).
    `raise_on_failure=False` returns the failed result instead (`tunesmith dataset check`).
    """
    from tunesmith.validation import run_validation

    outcome = run_validation(cfg, task_of(cfg, "validate").suite)
    out = cfg.dirs.validation
    write_json(out / VERDICT, {"success": outcome.success, "n_failed": outcome.n_failed,
                               "data": outcome.digests})
    logged = Logged(
        metrics={"validate/n_expectations": outcome.n_expectations,
                 "validate/n_failed": outcome.n_failed},
        tags={"validation.success": str(outcome.success).lower()},
        artifacts=[(relative(outcome.summary_path, cfg.root), "validation"),
                   (relative(outcome.result_path, cfg.root), "validation")],
    )
    result = ValidateResult(
        success=outcome.success, n_expectations=outcome.n_expectations,
        n_failed=outcome.n_failed, failures=outcome.failures,
        report_path=outcome.result_path, summary_path=outcome.summary_path,
        docs_index=outcome.docs_index, logged=logged,
    )
    if not result.success and raise_on_failure:
        error = ValidationFailed(outcome.headline)
        error.logged = logged
        raise error
    return result
