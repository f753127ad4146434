"""What each step's output depends on, as one hash: the flow's cache key.

A step whose key matches a previous successful run is skipped (Prefect cache). The key
covers the step's input data digests, the config sections it reads and the project code;
it is None (never cached) when the source is a URL or an input is missing. A step whose
output was deleted must run again and refresh the cache: see `output_present`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunesmith.config import Config
from tunesmith.sources import file_digest, is_url

_CODE_DIRS = ("tunesmith", "tasks")


def code_digest() -> str:
    """Hash of the project's Python code (any change re-runs every step)."""
    here = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for folder in _CODE_DIRS:
        for path in sorted((here / folder).rglob("*.py")):
            h.update(path.relative_to(here).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _inputs(cfg: Config, step: str) -> tuple[Any, Path | None] | None:
    """(what the step reads, a file its output must contain) or None if uncacheable."""
    d = cfg.dirs
    dump = cfg.model_dump(mode="json", by_alias=True)
    labels = [cfg.task, cfg.labels, cfg.label_map, dump["columns"]]
    if step == "ingest":
        if is_url(cfg.source.path):
            return None  # remote content can change behind the same URL
        local = Path(cfg.source.path)
        local = local if local.is_absolute() else cfg.root / local
        if not local.exists():
            return None
        return [file_digest(local), dump["source"], labels], d.raw / "manifest.json"
    if step == "clean":
        return [_read(d.raw / "manifest.json"), dump["clean"], labels], d.clean / "report.json"
    if step == "validate":
        return [_read(d.clean / "report.json"), dump["validate"], labels], d.validation / "result.json"
    if step == "tokenize":
        return ([_read(d.clean / "report.json"), dump["tokenize"], dump["model"], labels,
                 cfg.train.prompt_template], d.tokenized / "meta.json")
    if step == "train":
        return ([_read(d.tokenized / "meta.json"), dump["train"], dump["model"]],
                d.model / "train_summary.json")
    if step == "evaluate":
        return ([_read(d.model / "train_summary.json"), _read(d.clean / "report.json"),
                 dump["evaluate"]], d.eval / "metrics.json")
    if step == "register":
        return [_read(d.eval / "metrics.json"), dump["register"], dump["tracking"]], None
    raise ValueError(f"unknown step {step}")


def step_key(cfg: Config, step: str, code: str | None = None) -> str | None:
    """The cache key of `step` for `cfg`, or None when the step must run."""
    found = _inputs(cfg, step)
    if found is None:
        return None
    inputs, _ = found
    if any(part is None for part in inputs if not isinstance(part, (dict, list))):
        return None  # an input is missing: let the step run and fail loudly
    payload = json.dumps([step, cfg.name, str(cfg.root), inputs, code or code_digest()],
                         sort_keys=True, default=str)
    return f"{cfg.name}-{step}-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


def output_present(cfg: Config, step: str) -> bool:
    """Whether the step's output is on disk (a cached result is only valid if it is)."""
    found = _inputs(cfg, step)
    return found is not None and (found[1] is None or found[1].is_file())
