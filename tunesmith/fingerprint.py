"""The flow's cache key of a step: a hash of everything its declaration says it reads.

A step whose key matches a previous successful run is skipped (Prefect cache). The key
covers the resolved config keys it reads (`steps.resolved_reads`, the same text DVC
watches), the marker file of each input folder (its content digest or summary), the
source file for ingest, the base model's small files, and the code the step runs
(`codedeps.step_files`). It is None (never cached) when the source is a URL or an input is
missing. A step whose output was deleted must run again: see `output_present`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tunesmith import codedeps, objectives, steps
from tunesmith.config import Config
from tunesmith.models import resolve_base
from tunesmith.sources import file_digest, is_url

# The base model files that decide tokenization and architecture; the weights are named by
# size only (hashing ~90 MB per key computation would cost ~0.2 s on every no-op run).
BASE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
              "merges.txt", "special_tokens_map.json", "preprocessor_config.json",
              "generation_config.json", "chat_template.jinja")


def code_files(task: str, step: str) -> list[str]:
    """Project-relative paths of the code `step` runs for a dataset of type `task`."""
    return codedeps.step_files(step, objectives.MODULES[task], steps.declaration(step).uses)


def code_digest(task: str, step: str) -> str:
    h = hashlib.sha256()
    for rel in code_files(task, step):
        h.update(rel.encode())
        h.update((codedeps.ROOT / rel).read_bytes())
    return h.hexdigest()


def source_path(cfg: Config) -> Path:
    local = Path(cfg.source.path)
    return local if local.is_absolute() else cfg.root / local


def base_model_identity(cfg: Config) -> list[str]:
    """The base model as far as the key can tell without reading its weights."""
    base = Path(resolve_base(cfg.model.base, cfg.root, tokenizer_only=True))
    if not base.is_dir():
        return [str(base)]  # a hub id: the name is all we know without downloading
    out = [base.name]  # a named base's cached folder is named after its source's digest
    for path in sorted(p for p in base.iterdir() if p.is_file()):
        out.append(f"{path.name}:{path.stat().st_size}")
        if path.name in BASE_FILES:
            out.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def input_digests(cfg: Config, step: str) -> list | None:
    """What the step's declared inputs are now, or None when one is missing or remote."""
    found: list = []
    for item in steps.inputs(cfg.task, step):
        if item == steps.SOURCE:
            local = source_path(cfg)
            if is_url(cfg.source.path) or not local.exists():
                return None  # remote content can change behind the same URL
            found.append(file_digest(local))
        elif item == steps.BASE_MODEL:
            found.append(base_model_identity(cfg))
        else:
            marker = getattr(cfg.dirs, item) / steps.MARKERS[item]
            if not marker.is_file():
                return None  # let the step run and fail loudly
            found.append(marker.read_text(encoding="utf-8"))
    return found


def step_key(cfg: Config, step: str) -> str | None:
    """The cache key of `step` for `cfg`, or None when the step must run."""
    digests = input_digests(cfg, step)
    if digests is None:
        return None
    payload = json.dumps([step, cfg.name, str(cfg.root), steps.resolved_reads(cfg, step),
                          digests, code_digest(cfg.task, step)], sort_keys=True, default=str)
    return f"{cfg.name}-{step}-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


def output_present(cfg: Config, step: str) -> bool:
    """Whether the step's outputs are on disk (a cached result is only valid if they are)."""
    return all((getattr(cfg.dirs, d) / steps.MARKERS[d]).is_file()
               for d in steps.declaration(step).outputs)
