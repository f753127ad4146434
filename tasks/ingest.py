"""ingest: copy the source byte for byte into data/raw/NAME and describe it in a manifest."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tunesmith.config import Config
from tunesmith.jsonio import write_json
from tunesmith.sources import (
    fetch,
    file_digest,
    is_url,
    read_table,
    require_columns,
    source_format,
)

ROWS_FILE = "rows.parquet"  # the configured columns as strings; what `clean` reads
MANIFEST = "manifest.json"


@dataclass
class IngestResult:
    rows: int
    digest: str
    raw_dir: Path


def needed_columns(cfg: Config) -> list[str]:
    """Source columns the task uses, in a fixed order (text/prompt/image first, then label)."""
    cols = cfg.columns
    wanted = {"text-classification": [cols.text, cols.label],
              "causal-lm": [cols.prompt, cols.response],
              "image-classification": [cols.image, cols.label]}[cfg.task]
    return [c for c in wanted if c]


def ingest(cfg: Config) -> IngestResult:
    """Copy the source into `cfg.dirs.raw`, check it parses with the configured columns,
    and write `manifest.json` (rows, columns, sha256, source) plus `rows.parquet`."""
    out = cfg.dirs.raw
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if cfg.task == "image-classification":
        return _ingest_images(cfg, staging)
    src_path = cfg.source.path
    if is_url(src_path):
        local = fetch(src_path, staging / ("source" + Path(src_path.split("?")[0]).suffix))
    else:
        local = Path(src_path) if Path(src_path).is_absolute() else cfg.root / src_path
    fmt = source_format(cfg.source, local) if local.exists() else None
    frame = read_table(local, cfg.source)  # raises DataError naming the file
    require_columns(frame, needed_columns(cfg), local)

    copy = staging / ("source" + ("" if local.is_dir() else local.suffix))
    if local.parent != staging:
        if local.is_dir():
            shutil.copytree(local, copy)
        else:
            shutil.copyfile(local, copy)
    digest = file_digest(copy if copy.exists() else local)
    frame[needed_columns(cfg)].to_parquet(staging / ROWS_FILE, index=False)
    # No timestamp: the same source must give byte-identical outputs, or DVC and the
    # step cache would see a change where there is none.
    write_json(staging / MANIFEST, {
        "source": src_path,
        "format": fmt,
        "rows": len(frame),
        "columns": list(frame.columns),
        "sha256": digest,
        "bytes": (copy if copy.exists() else local).stat().st_size,
    })
    # Swap in the finished copy only now: a failed ingest leaves the previous one intact.
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return IngestResult(rows=len(frame), digest=digest, raw_dir=out)


def _ingest_images(cfg: Config, staging: Path) -> IngestResult:
    """Images: copy each file by digest and record width/height/mode/decodable per row."""
    from tunesmith.images.sources import ingest_images

    try:
        frame, fields = ingest_images(cfg, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the previous raw copy stays as it was
        raise
    frame.to_parquet(staging / ROWS_FILE, index=False)
    write_json(staging / MANIFEST, fields)
    out = cfg.dirs.raw
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return IngestResult(rows=len(frame), digest=fields["sha256"], raw_dir=out)
