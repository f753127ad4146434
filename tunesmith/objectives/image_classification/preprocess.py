"""The `tokenize` step for images: resize + centre crop with the model's image processor.

Each split is stored as uint8 pixels (C, H, W) at the processor's output size, in the same
`save_to_disk` layout as tokenized text, so the training core reads it with pyarrow alone.
Normalisation (rescale, ImageNet mean/std) is left to training: the stored bytes are 4x
smaller than float32, and the random resized crop of augmentation works on these pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tunesmith.config import Config
from tunesmith.errors import DataError, EnvironmentProblem

SPLITS = ("train", "val", "test")
BATCH = 256  # images decoded per processor call: bounded memory on large datasets


def load_processor(base: str):
    """The base model's image processor, PIL backend (torchvision has no CPU wheel here)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(base, backend="pil")
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EnvironmentProblem(
            f"model.base {base!r}: can't load its image processor "
            f"(preprocessor_config.json): {first}"
        ) from None


def normalisation(processor) -> dict:
    """What training applies to stored uint8 pixels to match the processor's output."""
    rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
    if processor.do_normalize:
        mean, std = list(map(float, processor.image_mean)), list(map(float, processor.image_std))
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return {"rescale": rescale, "mean": mean, "std": std}


def open_rgb(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        raise DataError(f"{path}: can't read the image: {exc}") from None


def resize(processor, images: list) -> np.ndarray:
    """uint8 (N, 3, H, W): the processor's resize and centre crop, not yet normalised."""
    out = processor(images, do_rescale=False, do_normalize=False, return_tensors="np")
    return np.clip(np.rint(out["pixel_values"]), 0, 255).astype(np.uint8)


def preprocess(cfg: Config, base: str, staging: Path) -> dict:
    """Write train/val/test into `staging`; the report (rows, image shape, normalisation)."""
    processor = load_processor(base)
    label_ids = {name: i for i, name in enumerate(cfg.labels)}
    rows, shape = {}, None
    for split in SPLITS:
        frame = pd.read_parquet(cfg.dirs.clean / f"{split}.parquet")
        chunks = []
        for start in range(0, len(frame), BATCH):
            paths = frame["image"].iloc[start:start + BATCH]
            chunks.append(resize(processor, [open_rgb(cfg.dirs.clean / p) for p in paths]))
        pixels = np.concatenate(chunks) if chunks else np.zeros((0, 3, 1, 1), np.uint8)
        shape = shape or (list(pixels.shape[1:]) if len(pixels) else None)
        _save(staging / split, pixels, [label_ids[x] for x in frame["label"]],
              frame["sha256"].tolist(), f"{cfg.name}-{split}")
        rows[split] = len(frame)
    # `meta` goes into meta.json: what training needs to turn the stored bytes into inputs.
    return {"rows": rows, "truncated": 0, "truncated_share": 0.0, "image_shape": shape,
            "meta": {"image_shape": shape, **normalisation(processor)}}


def _save(path: Path, pixels: np.ndarray, labels: list[int], shas: list[str], fp: str) -> None:
    import datasets

    datasets.disable_progress_bars()
    table = pa.table({
        "pixels": pa.array([p.tobytes() for p in pixels], type=pa.binary()),
        "labels": pa.array(labels, type=pa.int64()),
        "sha256": pa.array(shas, type=pa.string()),
    })
    datasets.Dataset(table, fingerprint=fp).save_to_disk(str(path))
