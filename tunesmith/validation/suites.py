"""What to check: one builder per task type turns the clean splits into GX batches.

A batch is a pandas frame plus the expectations to run on it. Split-level checks run on
each split as written by `clean`; cross-split checks (overlap, class shares, label drift)
run on small derived frames so that GX still reports them, offending rows included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tunesmith.config import Config

SPLITS = ("train", "val", "test")


@dataclass
class Batch:
    """A frame, the GX expectations to run on it, and the columns that name a row."""

    name: str
    frame: pd.DataFrame
    expectations: list[Any]
    # GX reports these columns for each offending row; empty = the frame's index (row number).
    row_id: list[str] = field(default_factory=list)


def bounded_by(*keys: str) -> dict[str, Any]:
    """An expectation's `meta` naming the config keys that bound it: a refused `dataset add`
    names them as the options that accept the data (tunesmith.datasets.settings_to_relax)."""
    return {"meta": {"settings": list(keys)}}


def split_min_rows(cfg: Config, split: str) -> int:
    # A split configured with fraction 0 (e.g. no val) may legitimately be empty.
    return cfg.validate_.min_split_rows if getattr(cfg.clean.split, split) > 0 else 0


def _overlap_frame(frames: dict[str, pd.DataFrame], key: str) -> pd.DataFrame:
    """All splits stacked, with `in_other_split` true where `key` also occurs in another split."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # pyarrow's hash-based is_in: pandas 3's isin on arrow strings goes through Python
    # objects (32 s for 1M rows on 2 busy cores vs 3.5 s here). astype(str) also covers
    # object columns; nulls are excluded below (the not-null expectation reports them).
    values = {}
    for split, df in frames.items():
        col = pa.array(df[key].astype(str))  # a ChunkedArray for arrow-backed columns
        values[split] = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    parts = []
    for split, df in frames.items():
        others = pa.concat_arrays([v for s, v in values.items() if s != split])
        in_other = pc.is_in(values[split], value_set=others).to_numpy(zero_copy_only=False)
        parts.append(pd.DataFrame({
            "split": split, "row": range(len(df)), key: df[key].to_numpy(),
            "in_other_split": in_other & df[key].notna().to_numpy(),
        }))
    return pd.concat(parts, ignore_index=True)


def _shares(labels: pd.Series, classes: list[str]) -> tuple[pd.Series, pd.Series]:
    counts = labels.value_counts().reindex(classes, fill_value=0)
    # An empty split has no distribution: NaN makes GX skip its drift rows (the split's
    # row-count expectation already fails).
    return counts, counts / len(labels) if len(labels) else counts * float("nan")


def _class_shares(frames: dict[str, pd.DataFrame], classes: list[str]) -> pd.DataFrame:
    """Per class: rows and share of the whole dataset, train and test share, and drift."""
    rows, share = _shares(pd.concat([f["label"] for f in frames.values()]), classes)
    out = pd.DataFrame({"label": classes, "rows": rows.to_numpy(), "share": share.to_numpy()})
    out["train_share"] = _shares(frames["train"]["label"], classes)[1].to_numpy()
    out["test_share"] = _shares(frames["test"]["label"], classes)[1].to_numpy()
    # Rounded so that a drift of exactly the bound (0.3 - 0.2 = 0.09999999999999998) compares
    # as the decimal a person would compute.
    out["drift"] = (out["train_share"] - out["test_share"]).abs().round(9)
    return out


def _has_columns(frames: dict[str, pd.DataFrame], columns: list[str]) -> bool:
    return all(c in f.columns for f in frames.values() for c in columns)


def text_classification(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    """Columns, nulls, label set, text lengths, row counts; overlap, class shares, drift."""
    import great_expectations.expectations as gxe

    v = cfg.validate_
    batches = []
    for split, df in frames.items():
        batches.append(Batch(split, df, [
            gxe.ExpectColumnToExist(column="text"),
            gxe.ExpectColumnToExist(column="label"),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.labels)),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=v.min_text_chars, max_value=v.max_text_chars,
                **bounded_by("validate.min_text_chars", "validate.max_text_chars")),
            gxe.ExpectTableRowCountToBeBetween(min_value=split_min_rows(cfg, split),
                                               **bounded_by("validate.min_split_rows")),
        ]))
    # Cross-split frames need both columns everywhere; the split suites already report
    # a missing column, and the derived checks would only repeat it.
    return batches + cross_split_batches(cfg, frames, key="text")


def cross_split_batches(cfg: Config, frames: dict[str, pd.DataFrame], key: str) -> list[Batch]:
    """Checks across the splits for a classification dataset whose rows are identified by
    `key` (the text; an image's sha256): rows, labels present, disjoint splits, class
    shares and train/test label drift. Empty when a split lacks `key` or `label`."""
    import great_expectations.expectations as gxe

    v = cfg.validate_
    if not _has_columns(frames, [key, "label"]):
        return []
    everything = _overlap_frame(frames, key)
    everything["label"] = pd.concat([f["label"] for f in frames.values()], ignore_index=True)
    shares = _class_shares(frames, list(cfg.labels))
    return [
        Batch("dataset", everything, [
            gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows, max_value=v.max_rows,
                                               **bounded_by("validate.min_rows",
                                                            "validate.max_rows")),
            gxe.ExpectColumnDistinctValuesToContainSet(column="label",
                                                       value_set=list(cfg.labels)),
            # Splits must be disjoint: a row in two splits leaks test data into training.
            gxe.ExpectColumnValuesToBeInSet(column="in_other_split", value_set=[False],
                                            **bounded_by("clean.split.given")),
        ], row_id=["split", "row", key]),
        Batch("class_shares", shares[["label", "rows", "share"]], [
            gxe.ExpectColumnValuesToBeBetween(column="share", min_value=v.min_class_share,
                                              **bounded_by("validate.min_class_share")),
        ], row_id=["label", "rows"]),
        Batch("label_drift", shares[["label", "train_share", "test_share", "drift"]], [
            gxe.ExpectColumnValuesToBeBetween(column="drift", max_value=v.max_label_drift,
                                              **bounded_by("validate.max_label_drift")),
        ], row_id=["label", "train_share", "test_share"]),
    ]


def causal_lm(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    """Columns, nulls, lengths, row counts per split; no prompt context (the conversation
    before its answer) in two splits."""
    import great_expectations.expectations as gxe

    v = cfg.validate_
    batches = []
    for split, df in frames.items():
        batches.append(Batch(split, df, [
            *(gxe.ExpectColumnToExist(column=c) for c in ("messages", "context")),
            gxe.ExpectColumnToExist(column="prompt"),
            gxe.ExpectColumnToExist(column="response"),
            gxe.ExpectColumnValuesToNotBeNull(column="prompt"),
            gxe.ExpectColumnValuesToNotBeNull(column="response"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="prompt", max_value=v.max_text_chars,
                                                    **bounded_by("validate.max_text_chars")),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="response", min_value=v.min_text_chars, max_value=v.max_text_chars,
                **bounded_by("validate.min_text_chars", "validate.max_text_chars")),
            gxe.ExpectTableRowCountToBeBetween(min_value=split_min_rows(cfg, split),
                                               **bounded_by("validate.min_split_rows")),
        ]))
    if _has_columns(frames, ["context"]):
        batches.append(Batch("dataset", _overlap_frame(frames, "context"), [
            gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows, max_value=v.max_rows,
                                               **bounded_by("validate.min_rows",
                                                            "validate.max_rows")),
            gxe.ExpectColumnValuesToBeInSet(column="in_other_split", value_set=[False],
                                            **bounded_by("clean.split.given")),
        ], row_id=["split", "row", "context"]))
    return batches
