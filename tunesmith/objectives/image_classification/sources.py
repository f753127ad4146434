"""Image datasets: a folder per class, or a CSV/JSONL/parquet table of image paths + labels.

`ingest_images` copies every referenced file into `raw/images/<sha256[:20]><suffix>` (so later
steps never depend on where the source lives) and describes each row: digest, size in bytes,
width, height, mode and whether it decodes. Nothing is dropped here; `clean` decides.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from tunesmith.config import Config
from tunesmith.errors import DataError
from tunesmith.sources import (
    GIVEN_SPLIT,
    SPLIT_NAMES,
    given_split,
    read_table,
    require_columns,
    source_format,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# `hotdog/train/<class>/*.jpg` style: split folders above the class folders give each image
# its split, which clean keeps (clean.split.given).
SPLIT_DIRS = set(SPLIT_NAMES)
MANIFEST_COLUMNS = ["image", "path", "label", "sha256", "bytes", "width", "height", "mode",
                    "format", "decodable", "error"]


def resolve_source(cfg: Config) -> Path:
    path = Path(cfg.source.path)
    return path if path.is_absolute() else cfg.root / path


def list_images(cfg: Config) -> tuple[pd.DataFrame, str]:
    """(rows with `file` (absolute), `path` (as shown to people), `label`; the format)."""
    local = resolve_source(cfg)
    if not local.exists():
        raise DataError(f"source.path: not found: {local}")
    fmt = cfg.source.format or ("folder" if local.is_dir() else source_format(cfg.source, local))
    if fmt == "folder":
        return from_folder(local), fmt
    frame = read_table(local, cfg.source)
    by_column = cfg.columns.split
    require_columns(frame, [cfg.columns.image, cfg.columns.label]
                    + ([by_column] if by_column else []), local)
    rows = []
    for i, (value, label) in enumerate(zip(frame[cfg.columns.image], frame[cfg.columns.label],
                                           strict=True)):
        if value is None or str(value).strip() == "":
            raise DataError(f"{local}: row {i + 1}: empty {cfg.columns.image!r} (an image path)")
        rel = Path(str(value).strip())
        # Relative paths are relative to the table, so the table and its images move together.
        rows.append({"file": rel if rel.is_absolute() else local.parent / rel,
                     "path": str(value).strip(), "label": label})
    listing = pd.DataFrame(rows)
    if by_column:
        listing[GIVEN_SPLIT] = given_split(frame[by_column], f"{local} column {by_column!r}")
    return listing, fmt


def from_folder(root: Path) -> pd.DataFrame:
    if not root.is_dir():
        raise DataError(f"{root}: source.format folder needs a directory of class folders")
    tops = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = bool(tops) and all(d.name.lower() in SPLIT_DIRS for d in tops)
    # (split or None, class folder) pairs: <split>/<class>/ or <class>/
    class_dirs = [(SPLIT_NAMES[d.name.lower()], c) for d in tops for c in sorted(d.iterdir())
                  if c.is_dir()] if split_dirs else [(None, d) for d in tops]
    rows = [{"file": f, "path": str(f.relative_to(root)), "label": d.name,
             **({GIVEN_SPLIT: split} if split_dirs else {})}
            for split, d in class_dirs for f in sorted(d.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not rows:
        raise DataError(f"{root}: no images found; expected {root}/<label>/*.png "
                        f"(suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return pd.DataFrame(rows)


def probe(data: bytes) -> dict:
    """width/height/mode/format of an encoded image and whether it fully decodes."""
    import io

    from PIL import Image

    if not data:
        return {"decodable": False, "error": "zero-size file"}
    try:
        with Image.open(io.BytesIO(data)) as img:
            # load() decodes every pixel: a truncated file fails here, not at training time.
            img.load()
            return {"width": img.width, "height": img.height, "mode": img.mode,
                    "format": img.format, "decodable": True, "error": None}
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"decodable": False, "error": first[:200]}


def ingest_images(cfg: Config, staging: Path) -> tuple[pd.DataFrame, dict]:
    """Copy the images into `staging/images/`, return the manifest rows and manifest fields."""
    listing, fmt = list_images(cfg)
    (staging / "images").mkdir(parents=True, exist_ok=True)
    local = resolve_source(cfg)
    if local.is_file():
        shutil.copyfile(local, staging / ("source" + local.suffix))
    rows, total = [], 0
    given = GIVEN_SPLIT in listing
    for item in listing.to_dict("records"):
        row = {"image": None, "path": item["path"], "label": item["label"], "sha256": None,
               "bytes": None, "width": None, "height": None, "mode": None, "format": None,
               "decodable": False, "error": None,
               **({GIVEN_SPLIT: item[GIVEN_SPLIT]} if given else {})}
        file = Path(item["file"])
        if not file.is_file():
            row["error"] = "missing file"
        else:
            data = file.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            stored = f"images/{digest[:20]}{file.suffix.lower()}"
            if not (staging / stored).exists():
                (staging / stored).write_bytes(data)
            total += len(data)
            row.update(image=stored, sha256=digest, bytes=len(data), **probe(data))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + ([GIVEN_SPLIT] if given else []))
    for col in ("bytes", "width", "height"):
        frame[col] = frame[col].astype("Int64")
    frame["label"] = frame["label"].map(lambda v: None if v is None else str(v))
    # The digest covers names, labels and bytes: renaming or relabelling is a new version.
    digest = hashlib.sha256(json.dumps(
        frame[["path", "label", "sha256"]].astype(str).values.tolist()).encode()).hexdigest()
    fields = {"source": cfg.source.path, "format": fmt, "rows": len(frame),
              "columns": MANIFEST_COLUMNS, "sha256": digest, "bytes": total,
              "decodable": int(frame["decodable"].sum()), "classes": sorted(
                  frame["label"].dropna().unique().tolist())}
    return frame, fields
