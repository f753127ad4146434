"""Cleaning image rows: drop what can't train, convert to RGB, write the clean splits.

Drop reasons, in order: missing_label, missing_file, zero_size, truncated, unreadable,
too_small (width or height below `clean.min_image_size`), conflicting_label (same bytes,
different labels), duplicate_bytes (same bytes again). RGB files are copied byte for byte;
other modes (L, P, RGBA, CMYK, ...) are converted to RGB and saved as PNG (lossless), alpha
composited on white, so every later step can assume 3-channel images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tunesmith.cleaning import class_balance, publish_dropped, within_split, write_splits
from tunesmith.config import CleanConfig, Config

SPLIT_COLUMNS = ["image", "label", "sha256", "width", "height", "path"]


def _examples(frame: pd.DataFrame, mask: pd.Series, n: int = 5) -> list[dict]:
    rows = frame.loc[mask].head(n)
    return [{"row": int(i) + 1, "path": r.path, "label": r.label, "error": r.error}
            for i, r in rows.iterrows()]


def drop_bad(frame: pd.DataFrame, opts: CleanConfig) -> tuple[pd.DataFrame, dict, list]:
    """(kept rows, {reason: {count, examples}}, [dropped frames with a `reason` column])."""
    drops: dict[str, dict] = {}
    dropped: list[pd.DataFrame] = []

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            drops[reason] = {"count": int(mask.sum()), "examples": _examples(frame, mask)}
            dropped.append(frame.loc[mask].assign(reason=reason))
            frame = frame.loc[~mask]

    error = frame["error"].fillna("").str.lower()
    drop(frame["label"].isna(), "missing_label")
    drop(error.loc[frame.index] == "missing file", "missing_file")
    drop(frame["bytes"].fillna(-1) == 0, "zero_size")
    error = error.loc[frame.index]
    drop(~frame["decodable"] & error.str.contains("truncat"), "truncated")
    drop(~frame["decodable"], "unreadable")
    small = (frame["width"] < opts.min_image_size) | (frame["height"] < opts.min_image_size)
    drop(small, "too_small")
    if opts.dedup:
        conflicting = frame.groupby("sha256")["label"].transform("nunique") > 1
        if opts.drop_conflicting:
            drop(conflicting, "conflicting_label")
        drop(within_split(frame["sha256"], frame, opts.split).duplicated(), "duplicate_bytes")
    return frame, drops, dropped


def to_rgb(src: Path, dst_dir: Path, sha: str) -> tuple[str, bool]:
    """Copy an RGB file as is, else write an RGB PNG; returns (name in dst_dir, converted)."""
    from PIL import Image

    with Image.open(src) as img:
        if img.mode == "RGB":
            name = f"{sha[:20]}{src.suffix}"
            shutil.copyfile(src, dst_dir / name)
            return name, False
        img.load()
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            rgb = img.convert("RGB")
    name = f"{sha[:20]}.png"
    rgb.save(dst_dir / name, format="PNG")
    return name, True


def write_outputs(cfg: Config, staging: Path, frame: pd.DataFrame, assignment: pd.Series,
                  drops: dict, dropped: list[pd.DataFrame], rows_in: int) -> dict:
    """images/ (RGB) + {train,val,test}.parquet (+ dropped.csv) into `staging`; the report."""
    (staging / "images").mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    converted = 0
    names = []
    for row in frame.itertuples():
        name, was_converted = to_rgb(cfg.dirs.raw / row.image, staging / "images", row.sha256)
        names.append(f"images/{name}")
        converted += was_converted
    frame["image"] = names
    frame["width"] = frame["width"].astype(int)
    frame["height"] = frame["height"].astype(int)
    report: dict = {"rows_in": rows_in, "rows_out": len(frame), "dropped": drops,
                    "converted_to_rgb": converted,
                    **write_splits(staging, frame, assignment, SPLIT_COLUMNS)}
    for side in ("width", "height"):
        values = frame[side].to_numpy()
        report[f"image_{side}"] = {"min": int(values.min()), "p50": int(np.median(values)),
                                   "max": int(values.max())}
    report["class_balance"] = class_balance(frame, assignment)
    publish_dropped(staging, dropped)
    return report
