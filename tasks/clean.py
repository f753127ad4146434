"""clean: normalise, map labels, drop bad rows by reason, de-duplicate, split without leaks."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.ingest import ROWS_FILE, needed_columns
from tunesmith.cleaning import (
    dedup_key,
    examples,
    frame_digest,
    normalise_text,
    publish_clean_output,
    stratified_split,
)
from tunesmith.config import Config
from tunesmith.errors import DataError
from tunesmith.jsonio import read_json

SPLITS = ("train", "val", "test")
REPORT = "report.json"


@dataclass
class CleanResult:
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    split_sizes: dict[str, int]
    clean_dir: Path


def load_rows(cfg: Config) -> pd.DataFrame:
    """The ingested rows, renamed to the pipeline's column names (text/label, prompt/response)."""
    raw = pd.read_parquet(cfg.dirs.raw / ROWS_FILE)
    roles = {"text-classification": ("text", "label"), "causal-lm": ("prompt", "response"),
             "image-classification": ("image", "label")}[cfg.task]
    return raw.rename(columns=dict(zip(needed_columns(cfg), roles, strict=True)))


def clean(cfg: Config) -> CleanResult:
    """Clean `data/raw/NAME` into train/val/test parquet files plus a report of every drop."""
    if cfg.task == "image-classification":
        return _clean_images(cfg)
    frame = load_rows(cfg)
    source = cfg.source.path
    rows_in = len(frame)
    opts = cfg.clean
    drops: dict[str, dict] = {}
    dropped_rows: list[pd.DataFrame] = []

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        if mask.any():
            drops[reason] = {"count": int(mask.sum()), "examples": examples(frame, mask, col=text_col)}
            dropped_rows.append(frame.loc[mask].assign(reason=reason))
            frame = frame.loc[~mask]

    if cfg.task == "causal-lm":
        text_col = "prompt"
        frame["prompt"] = normalise_text(frame["prompt"], opts)
        frame["response"] = normalise_text(frame["response"], opts)
        drop((frame["prompt"] == "") | (frame["response"] == ""), "empty_text")
        key = dedup_key(frame["prompt"] + " \x00 " + frame["response"])
    else:
        text_col = "text"
        frame["text"] = normalise_text(frame["text"], opts)
        frame["label"] = _map_labels(frame["label"], cfg, source)
        drop(frame["label"].isna(), "missing_label")
        drop(frame["text"] == "", "empty_text")
        drop(frame["text"].str.len() < opts.min_chars, "too_short")
        drop(frame["text"].str.len() > opts.max_chars, "too_long")
        key = dedup_key(frame["text"])

    conflicts: list[dict] = []
    if opts.dedup:
        group = [text_col, "response"] if cfg.task == "causal-lm" else [text_col, "label"]
        drop(frame.duplicated(group, keep="first"), "duplicate_exact")
        key = key.loc[frame.index]
        if cfg.task != "causal-lm":
            n_labels = frame.groupby(key)["label"].transform("nunique")
            conflicting = n_labels > 1
            conflicts = _conflict_examples(frame, key, conflicting)
            if opts.drop_conflicting:
                drop(conflicting, "conflicting_label")
                key = key.loc[frame.index]
        drop(key.duplicated(keep="first"), "duplicate_normalised")

    _require_rows(frame, cfg, drops, rows_in)
    labels = frame["label"] if cfg.task != "causal-lm" else pd.Series("all", index=frame.index)
    assignment = stratified_split(labels, opts.split)
    report = _write_outputs(cfg, frame, assignment, drops, dropped_rows, conflicts, rows_in)
    return CleanResult(rows_in, len(frame), {k: v["count"] for k, v in drops.items()},
                       report["split_sizes"], cfg.dirs.clean)


def _clean_images(cfg: Config) -> CleanResult:
    """Images: drop broken/small/duplicate files (tunesmith.images.cleaning), RGB, split."""
    from tunesmith.images.cleaning import drop_bad, write_outputs

    frame = pd.read_parquet(cfg.dirs.raw / ROWS_FILE)
    rows_in = len(frame)
    frame["label"] = _map_labels(frame["label"], cfg, cfg.source.path)
    frame, drops, dropped = drop_bad(frame, cfg.clean)
    _require_rows(frame, cfg, drops, rows_in)
    report = write_outputs(cfg, frame, stratified_split(frame["label"], cfg.clean.split),
                           drops, dropped, rows_in)
    return CleanResult(rows_in, len(frame), {k: v["count"] for k, v in drops.items()},
                       report["split_sizes"], cfg.dirs.clean)


def _map_labels(raw: pd.Series, cfg: Config, source: str) -> pd.Series:
    """Apply label_map, then insist every label is in the label set (naming a bad row)."""
    labels = raw.astype(object).where(raw.notna(), None).map(
        lambda v: None if v is None or str(v).strip() == "" else str(v).strip()
    )
    if cfg.label_map:
        labels = labels.map(lambda v: cfg.label_map.get(v, v) if v is not None else None)
    unknown = labels.notna() & ~labels.isin(cfg.labels)
    if unknown.any():
        first = unknown.idxmax()
        values = sorted(labels[unknown].unique())[:5]
        raise DataError(
            f"{source}: row {first + 1}: label {labels[first]!r} is not in labels {cfg.labels} "
            f"({int(unknown.sum())} rows, values {values}); add it to labels or label_map "
            f"in datasets/{cfg.name}.yaml"
        )
    return labels


def _conflict_examples(frame: pd.DataFrame, key: pd.Series, mask: pd.Series) -> list[dict]:
    sample = frame.loc[mask].assign(key=key[mask]).sort_values("key").head(10)
    return [{"row": int(i) + 1, "text": r.text[:200], "label": r.label} for i, r in sample.iterrows()]


def _require_rows(frame: pd.DataFrame, cfg: Config, drops: dict, rows_in: int) -> None:
    if frame.empty:
        why = ", ".join(f"{k}={v['count']}" for k, v in drops.items())
        raise DataError(f"{cfg.source.path}: zero rows left after cleaning ({rows_in} in; {why})")
    if cfg.task != "causal-lm" and frame["label"].nunique() < 2:
        only = frame["label"].iloc[0]
        raise DataError(
            f"{cfg.source.path}: only one class ({only!r}) after cleaning; "
            "a classifier needs at least two"
        )


def _write_outputs(cfg: Config, frame: pd.DataFrame, assignment: pd.Series, drops: dict,
                   dropped_rows: list[pd.DataFrame], conflicts: list[dict], rows_in: int) -> dict:
    out = cfg.dirs.clean
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cols = ["prompt", "response"] if cfg.task == "causal-lm" else ["text", "label"]
    text_col = cols[0]
    report: dict = {"rows_in": rows_in, "rows_out": len(frame), "dropped": drops,
                    "conflicting_labels": conflicts, "split_sizes": {}, "digests": {},
                    "source_sha256": read_json(cfg.dirs.raw / "manifest.json")["sha256"]}
    for split in SPLITS:
        part = frame.loc[assignment == split, cols].reset_index(drop=True)
        part.to_parquet(staging / f"{split}.parquet", index=False)
        report["split_sizes"][split] = len(part)
        report["digests"][split] = frame_digest(part)
    lengths = frame[text_col].str.len().to_numpy()
    report["text_chars"] = {f"p{q}": int(np.percentile(lengths, q)) for q in (5, 50, 95)}
    report["text_chars"]["max"] = int(lengths.max())
    if cfg.task != "causal-lm":
        report["class_balance"] = {
            split: frame.loc[assignment == split, "label"].value_counts().sort_index().to_dict()
            for split in SPLITS
        }
    publish_clean_output(staging, out, report, dropped_rows)
    return report
