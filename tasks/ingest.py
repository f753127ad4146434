"""ingest: copy the source byte for byte into data/raw/NAME and describe it in a manifest."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config import Config
from tunesmith.jsonio import write_json
from tunesmith.logged import Logged, relative
from tunesmith.steps import narrowed, task_of

ROWS_FILE = "rows.parquet"  # the task type's columns, named by role; what `clean` reads
MANIFEST = "manifest.json"


@dataclass
class IngestResult:
    rows: int
    digest: str
    raw_dir: Path
    logged: Logged = field(default_factory=Logged, repr=False)


@narrowed
def ingest(cfg: Config) -> IngestResult:
    """Copy the source into `cfg.dirs.raw`, check it parses with the configured columns,
    and write `manifest.json` (rows, sha256, source) plus `rows.parquet`."""
    out = cfg.dirs.raw
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        frame, manifest = task_of(cfg, "ingest").read_source(cfg, staging)
        frame.to_parquet(staging / ROWS_FILE, index=False)
        write_json(staging / MANIFEST, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the previous raw copy stays as it was
        raise
    # Swap in the finished copy only now: a failed ingest leaves the previous one intact.
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    logged = Logged(
        metrics={"data/raw_rows": manifest["rows"], "data/raw_bytes": manifest["bytes"]},
        tags={"data.source": str(manifest["source"]), "data.raw_sha256": manifest["sha256"]},
        artifacts=[(relative(out / MANIFEST, cfg.root), "data")],
    )
    return IngestResult(rows=len(frame), digest=manifest["sha256"], raw_dir=out, logged=logged)
