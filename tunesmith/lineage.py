"""Where a model came from beyond its data digests: the git commit and dvc.lock's hashes."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tunesmith.config import Config


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def dvc_lock_hashes(cfg: Config) -> dict[str, str]:
    """{"dvc.<step>.<out path>": md5} for this dataset's stages in dvc.lock.

    Empty unless the lock's ingest stage recorded the source file as it is now: after a
    `tunesmith run` on newer data the lock (from an older `dvc repro`) describes other data.
    """
    import yaml

    from tunesmith.steps import stage_name

    path = cfg.root / "dvc.lock"
    if not path.is_file():
        return {}
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    source = cfg.root / cfg.source.path
    recorded = [d.get("md5") for d in (stages.get(stage_name(cfg.name, "ingest")) or {})
                .get("deps", []) if d.get("path") == cfg.source.path]
    if not source.is_file() or not recorded or recorded[0] != _md5(source):
        return {}
    out = {}
    for step in ("ingest", "clean", "validate", "tokenize", "train", "evaluate"):
        for item in (stages.get(stage_name(cfg.name, step)) or {}).get("outs", []) or []:
            digest = item.get("md5") or item.get("hash") or ""
            out[f"dvc.{step}.{item.get('path')}"] = str(digest)
    return out


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
