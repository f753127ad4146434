"""Text cleaning, label mapping, de-duplication and the leak-free split, as pure functions.

All operations are vectorised pandas string ops: the data-path benchmark cleans 1M rows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tunesmith.config import CleanConfig, SplitConfig
from tunesmith.errors import DataError

_TAG = re.compile(r"<[^>]{0,200}>")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]{2,8});")
_NON_WORD = re.compile(r"[^\w]+")


@dataclass
class Dropped:
    """Rows removed by one rule: count and a few (row, text) examples."""

    count: int = 0
    examples: list[dict] = field(default_factory=list)


def normalise_text(text: pd.Series, opts: CleanConfig) -> pd.Series:
    """Unicode normalisation, optional HTML stripping/lowercasing, whitespace collapsing."""
    out = text.fillna("").astype(str)
    if opts.unicode_form != "none":
        out = out.str.normalize(opts.unicode_form)
    if opts.strip_html:
        import html

        out = out.str.replace(_TAG, " ", regex=True)
        has_entity = out.str.contains(_ENTITY, regex=True)
        out = out.where(~has_entity, out[has_entity].map(html.unescape))
    if opts.lowercase:
        out = out.str.lower()
    return out.str.replace(r"\s+", " ", regex=True).str.strip()


def dedup_key(text: pd.Series) -> pd.Series:
    """The normalised-text key: casefolded, punctuation and spacing removed.

    "Call me!" and "call  me" share a key, so they count as one text for de-duplication
    and can never land in two different splits.
    """
    return text.str.casefold().str.replace(_NON_WORD, "", regex=True)


def stratified_split(labels: pd.Series, split: SplitConfig) -> pd.Series:
    """Assign each row to train/val/test, per class, seeded; small classes still reach test.

    Call this after de-duplication so each normalised text is one row: that makes the
    splits disjoint by construction.
    """
    rng = np.random.default_rng(split.seed)
    assignment = pd.Series("train", index=labels.index, dtype=object)
    for label in sorted(labels.unique()):
        idx = labels.index[labels == label].to_numpy()
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * split.test))
        n_val = int(round(len(idx) * split.val))
        # A class with >= 3 rows gets at least one test (and val, if wanted) example.
        if len(idx) >= 3:
            n_test = max(n_test, 1)
            n_val = max(n_val, 1) if split.val > 0 else 0
        assignment[idx[:n_test]] = "test"
        assignment[idx[n_test:n_test + n_val]] = "val"
    return assignment


def given_splits(frame: pd.DataFrame, split: SplitConfig) -> pd.Series | None:
    """The split each row came with (ingest's `split` column), or None: the source gives none,
    or `clean.split.given: resplit`."""
    if split.given != "keep" or "split" not in frame or frame["split"].isna().all():
        return None
    return frame["split"]


def assign_splits(frame: pd.DataFrame, labels: pd.Series,
                  split: SplitConfig) -> tuple[pd.Series, str]:
    """(train/val/test per row, how they were made). Given splits are kept: a held-out split
    that is not called test (hot dog's val/) becomes the test split, so figures compare with
    published ones, and val is carved from train (stratified, train:val as configured) when
    the source gives none. Otherwise the stratified random split."""
    given = given_splits(frame, split)
    names = set() if given is None else set(given.dropna())
    if given is None or names == {"train"}:  # a DatasetDict with train alone: nothing held out
        return stratified_split(labels, split), "random"
    if given.isna().any() or "train" not in names:
        raise DataError(f"the source gives splits {sorted(names)} for some rows: every row "
                        "needs one and there must be train and a held-out split (or set "
                        "clean.split.given: resplit)")
    assignment = given.copy().astype(object)
    how = "given " + "/".join(n for n in SPLITS if n in names)
    if "test" not in names:
        assignment[assignment == "val"] = "test"
        how += " (its val is the test split)"
    if "val" in set(assignment) or split.val == 0:
        return assignment, how
    share = split.val / (split.train + split.val)  # of train, as the configured ratio says
    train = assignment.index[assignment == "train"]
    carve = SplitConfig(train=1 - share, val=0.0, test=share, seed=split.seed)
    carved = stratified_split(labels.loc[train], carve)
    assignment.loc[carved.index[carved == "test"]] = "val"
    return assignment, how + f", val carved from train ({share:.0%} of it)"


def within_split(key: pd.Series | pd.DataFrame, frame: pd.DataFrame,
                 split: SplitConfig) -> pd.DataFrame:
    """A de-duplication key that includes the given split: a row repeated in two given splits
    is kept in both, so validation names the leak instead of clean hiding it."""
    key = key.to_frame() if isinstance(key, pd.Series) else key
    given = given_splits(frame, split)
    return key if given is None else key.assign(_given_split=given.to_numpy())


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest of a frame (order-sensitive), for lineage and caching."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def examples(frame: pd.DataFrame, mask: pd.Series, n: int = 5, col: str = "text") -> list[dict]:
    rows = frame.loc[mask].head(n)
    return [{"row": int(i) + 1, col: str(v)[:200]} for i, v in rows[col].items()]


SPLITS = ("train", "val", "test")


def map_labels(raw: pd.Series, labels: list[str], label_map: dict[str, str], source: str,
               name: str) -> pd.Series:
    """Apply `label_map`, then insist every label is in `labels` (naming a bad row)."""
    out = raw.astype(object).where(raw.notna(), None).map(
        lambda v: None if v is None or str(v).strip() == "" else str(v).strip()
    )
    if label_map:
        present = set(out.dropna().unique())
        if not present & set(label_map):
            raise DataError(
                f"{source}: label_map keys {sorted(label_map)[:5]} match no label in the data "
                f"(values {sorted(present)[:5]}); fix label_map in datasets/{name}.yaml")
        out = out.map(lambda v: label_map.get(v, v) if v is not None else None)
    unknown = out.notna() & ~out.isin(labels)
    if unknown.any():
        first = unknown.idxmax()
        values = sorted(out[unknown].unique())[:5]
        raise DataError(
            f"{source}: row {first + 1}: label {out[first]!r} is not in labels {labels} "
            f"({int(unknown.sum())} rows, values {values}); add it to labels or label_map "
            f"in datasets/{name}.yaml"
        )
    return out


def require_rows(frame: pd.DataFrame, drops: dict, rows_in: int, source: str,
                 labelled: bool) -> None:
    """Fail (naming the drops) when cleaning left nothing, or one class for a classifier."""
    if frame.empty:
        why = ", ".join(f"{k}={v['count']}" for k, v in drops.items())
        raise DataError(f"{source}: zero rows left after cleaning ({rows_in} in; {why})")
    if labelled and frame["label"].nunique() < 2:
        raise DataError(f"{source}: only one class ({frame['label'].iloc[0]!r}) after "
                        "cleaning; a classifier needs at least two")


def write_splits(staging: Path, frame: pd.DataFrame, assignment: pd.Series,
                 columns: list[str]) -> dict:
    """{train,val,test}.parquet of `columns` into `staging`; their sizes and digests."""
    sizes, digests = {}, {}
    for split in SPLITS:
        part = frame.loc[assignment == split, columns].reset_index(drop=True)
        part.to_parquet(staging / f"{split}.parquet", index=False)
        sizes[split] = len(part)
        digests[split] = frame_digest(part)
    return {"split_sizes": sizes, "digests": digests}


def class_balance(frame: pd.DataFrame, assignment: pd.Series) -> dict:
    return {split: frame.loc[assignment == split, "label"].value_counts().sort_index().to_dict()
            for split in SPLITS}


def length_stats(values: pd.Series) -> dict[str, int]:
    """p5/p50/p95/max of the character lengths of `values`."""
    lengths = values.str.len().to_numpy()
    out = {f"p{q}": int(np.percentile(lengths, q)) for q in (5, 50, 95)}
    out["max"] = int(lengths.max())
    return out


def publish_dropped(staging: Path, dropped: list[pd.DataFrame]) -> None:
    """dropped.csv: every removed row with its 1-based source row and the reason."""
    if dropped:
        rows = pd.concat(dropped)
        rows.insert(0, "row", rows.index + 1)
        rows.to_csv(staging / "dropped.csv", index=False)


def report_lines(report: dict, example_col: str) -> list[str]:
    """The lines of a clean report every task type shares: rows, drops, balance, splits."""
    lines = [f"{report['rows_in']} rows in, {report['rows_out']} kept"]
    for reason, info in report["dropped"].items():
        first = info["examples"][0] if info["examples"] else {}
        shown = first.get(example_col, first.get("path", first.get("text", "")))
        lines.append(f"  dropped {info['count']:>7} {reason:22} e.g. row {first.get('row')}: "
                     f"{str(shown)[:60]!r}")
    if "class_balance" in report:
        train = report["class_balance"]["train"]
        total = sum(train.values()) or 1
        lines.append("  class balance (train): " + ", ".join(
            f"{k} {v} ({v / total:.0%})" for k, v in train.items()))
    sizes = report["split_sizes"]
    how = report.get("splits_from", "random")
    lines.append(f"  splits: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}"
                 + ("" if how == "random" else f"; {how}"))
    return lines
