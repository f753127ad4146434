"""Load a trained image classifier with its image processor and score image files.

The registry's pyfunc (tunesmith/objectives/image_classification/served.py) repeats these few lines,
because MLflow runs that file without tunesmith installed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import EnvironmentProblem
from tunesmith.objectives.image_classification.preprocess import open_rgb


def load_image_classifier(path: Path, labels: list[str]) -> tuple[Any, Any]:
    """The trained model (eval mode) and its image processor; checks the label order."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if not (path / "config.json").is_file():
        raise EnvironmentProblem(f"{path}: no trained model here; run the train step first")
    processor = AutoImageProcessor.from_pretrained(path, backend="pil")
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    if names != labels:
        raise EnvironmentProblem(
            f"{path}/config.json: id2label {names} does not match the dataset labels {labels}")
    return model, processor


def predict_proba(model: Any, processor: Any, paths: list[Path], batch_size: int) -> np.ndarray:
    """Softmax probabilities (len(paths), num_labels), preprocessed as at training."""
    import torch

    chunks = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            images = [open_rgb(p) for p in paths[start:start + batch_size]]
            batch = processor(images, return_tensors="pt")
            chunks.append(model(**batch).logits.float().softmax(-1).numpy())
    n = model.config.num_labels
    return np.concatenate(chunks) if chunks else np.zeros((0, n))


def latency(model: Any, processor: Any, paths: list[Path], n: int) -> dict[str, float]:
    """Milliseconds per image (decode + preprocess + forward), one at a time and batched."""
    sample = paths[:n]
    predict_proba(model, processor, sample[:2], 2)  # warm-up: the first call allocates
    t0 = time.perf_counter()
    for p in sample:
        predict_proba(model, processor, [p], 1)
    t1 = time.perf_counter()
    predict_proba(model, processor, sample, max(len(sample), 1))
    t2 = time.perf_counter()
    k = max(len(sample), 1)
    return {"latency_ms_batch1": 1000 * (t1 - t0) / k, "latency_ms_batched": 1000 * (t2 - t1) / k,
            "latency_batch_size": float(len(sample))}
