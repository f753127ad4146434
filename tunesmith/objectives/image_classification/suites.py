"""GX batches for image classification: the ingest manifest plus the clean splits.

The manifest (every source file, before cleaning) carries the decodable share: clean drops
unreadable files, so only the manifest can say that too many of them were broken. The
splits carry sizes, labels, files on disk, class balance, drift and cross-split leaks by
content digest (the same bytes under two names is still one image).
"""

from __future__ import annotations

import pandas as pd

from tunesmith.config import Config
from tunesmith.validation.suites import (
    Batch,
    bounded_by,
    cross_split_batches,
    split_min_rows,
)

COLUMNS = ["image", "label", "sha256", "width", "height"]


def image_classification(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    """Manifest decodable share; per split columns, labels, min size, files; cross-split."""
    import great_expectations.expectations as gxe

    v = cfg.validate_
    manifest = pd.read_parquet(cfg.dirs.raw / "rows.parquet")[["path", "decodable", "error"]]
    batches = [Batch("manifest", manifest, [
        # `mostly`: at least this share of source files must decode; GX lists broken ones.
        gxe.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True],
                                        mostly=v.min_decodable_share,
                                        **bounded_by("validate.min_decodable_share")),
    ], row_id=["path", "error"])]
    for split, df in frames.items():
        df = df.copy()
        if "image" in df:
            df["file_exists"] = [(cfg.dirs.clean / p).is_file() for p in df["image"]]
        batches.append(Batch(split, df, [
            *(gxe.ExpectColumnToExist(column=c) for c in COLUMNS),
            gxe.ExpectColumnValuesToNotBeNull(column="image"),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.labels)),
            gxe.ExpectColumnValuesToBeBetween(column="width", min_value=v.min_image_size,
                                              **bounded_by("validate.min_image_size")),
            gxe.ExpectColumnValuesToBeBetween(column="height", min_value=v.min_image_size,
                                              **bounded_by("validate.min_image_size")),
            gxe.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True]),
            gxe.ExpectTableRowCountToBeBetween(min_value=split_min_rows(cfg, split),
                                               **bounded_by("validate.min_split_rows")),
        ], row_id=["path"] if "path" in df else []))
    # No image (by content) in two splits: that would leak test images into training.
    return batches + cross_split_batches(cfg, frames, key="sha256")
