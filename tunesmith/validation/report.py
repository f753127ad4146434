"""How results read: GX results -> flat records, one-line failures, result.json, summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.validation.suites import Batch

_SHORT = 80  # characters of a text shown per offending row; the JSON keeps GX's full values
_SKIP_KWARGS = {"column", "batch_id", "result_format"}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= _SHORT:
        return text
    size = f" ({len(value)} chars)" if isinstance(value, str) else ""
    return text[: _SHORT - 3] + "..." + size


def _error(result: Any) -> str | None:
    """The first exception GX caught while computing this expectation, if any."""
    info = result.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "error").splitlines()[0]
    return None


def _examples(res: dict[str, Any], column: str | None) -> list[str]:
    """'row 5: 'bad'' or 'split=val row=3 text='...'' for each reported offending row."""
    if res.get("partial_missing_list"):  # expect_column_distinct_values_to_contain_set
        return [f"missing: {_short(v)}" for v in res["partial_missing_list"]]
    values = res.get("partial_unexpected_list") or []
    rows = res.get("partial_unexpected_index_list") or []
    out = []
    for i, row in enumerate(rows):
        value = values[i] if i < len(values) else None
        if isinstance(row, dict):
            # GX adds the checked column to the named row; its value follows the colon.
            named = " ".join(f"{k}={_short(v)}" for k, v in row.items() if k != column)
            # A boolean marker column (in_other_split) says nothing the row ids don't.
            checked = f"{column}={_short(value)}"
            out.append(named if value is None or isinstance(value, bool) else f"{named}: {checked}")
        else:
            out.append(f"row {row}: {_short(value)}")
    return out or [_short(v) for v in values]


def _observed(res: dict[str, Any], error: str | None, result_success: bool) -> str:
    if error:
        return f"error: {error}"
    if res == {}:  # expect_column_to_exist reports nothing but success
        return "" if result_success else "column missing"
    if res.get("observed_value") is not None:
        value = res["observed_value"]
        return _short(value) if not isinstance(value, list) else _short(sorted(map(str, value)))
    if "unexpected_count" in res:
        return f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected"
    return ""


def record(batch: Batch, result: Any) -> dict[str, Any]:
    """One expectation's outcome as plain JSON-able data."""
    config = result.expectation_config
    res = result.result or {}
    error = _error(result)
    return {
        "batch": batch.name,
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "kwargs": {k: v for k, v in config.kwargs.items() if k not in _SKIP_KWARGS},
        "success": bool(result.success),
        "observed": _observed(res, error, bool(result.success)),
        "unexpected_count": res.get("unexpected_count"),
        "examples": _examples(res, config.kwargs.get("column")),
        "error": error,
        # the config keys that bound this expectation (suites.bounded_by): what to relax
        "settings": list((config.meta or {}).get("settings", [])),
    }


def check_name(rec: dict[str, Any]) -> str:
    """`train: expect_column_values_to_be_in_set(label)`."""
    column = f"({rec['column']})" if rec["column"] else ""
    return f"{rec['batch']}: {rec['expectation']}{column}"


def failure_line(rec: dict[str, Any]) -> str:
    """`train: expect_column_values_to_be_in_set(label): 1 of 64 rows unexpected; e.g. ...`."""
    line = f"{check_name(rec)}: {rec['observed']}"
    return line + (f"; e.g. {'; '.join(rec['examples'][:3])}" if rec["examples"] else "")


def headline(dataset: str, records: list[dict[str, Any]], summary: Path) -> str:
    """One line for the CLI: which checks failed and where the rows are."""
    failed = [check_name(r) for r in records if not r["success"]]
    if not failed:
        return f"dataset {dataset!r} passed validation: {len(records)} expectations"
    shown = ", ".join(failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
    return (
        f"dataset {dataset!r} failed validation: {len(failed)} of {len(records)} expectations "
        f"failed ({shown}); offending rows in {summary}"
    )


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def summary_markdown(dataset: str, records: list[dict[str, Any]], rows: dict[str, int],
                     docs_index: Path) -> str:
    """The table the CLI prints and the flow publishes as an artifact."""
    failed = [r for r in records if not r["success"]]
    status = "passed" if not failed else f"FAILED ({len(failed)} of {len(records)} expectations)"
    lines = [
        f"# Validation of `{dataset}`: {status}",
        "",
        "Rows: " + ", ".join(f"{s} {n}" for s, n in rows.items())
        + ". Row numbers are 0-based positions in the split's parquet file.",
        f"Data Docs: `{docs_index}`",
        "",
        "| expectation | batch | status | observed | offending rows |",
        "| --- | --- | --- | --- | --- |",
    ]
    # Failures first: they are what a reader opens this file for.
    for r in sorted(records, key=lambda r: r["success"]):
        name = r["expectation"] + (f"({r['column']})" if r["column"] else "")
        status_cell = "ok" if r["success"] else "**FAILED**"
        lines.append(
            f"| {_cell(name)} | {r['batch']} | {status_cell} | {_cell(r['observed'])} "
            f"| {_cell('; '.join(r['examples']))} |"
        )
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
