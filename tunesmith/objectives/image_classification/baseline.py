"""The classical baseline for images: logistic regression on downsampled pixels + colours.

Features per image: 16x16 grey pixels (layout) and an 8-bin histogram per RGB channel
(colour), standardised. A fine-tuned CNN that can't beat this has learnt nothing a linear
model on thumbnails couldn't: too little data, broken labels, or a training bug.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

NAME = "pixels+histogram LR"
THUMB = 16
BINS = 8


def features(paths: list[Path]) -> np.ndarray:
    """(n, 16*16 + 3*8) features; images are opened as RGB."""
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        grey = np.asarray(rgb.convert("L").resize((THUMB, THUMB), Image.BILINEAR), float) / 255
        pixels = np.asarray(rgb)
        hist = [np.histogram(pixels[..., c], bins=BINS, range=(0, 256))[0] / pixels[..., c].size
                for c in range(3)]
        rows.append(np.concatenate([grey.ravel(), *hist]))
    return np.asarray(rows)


def fit_baseline(paths: list[Path], y: np.ndarray, seed: int = 42) -> Pipeline:
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    model.fit(features(paths), y)
    return model


def baseline_proba(model: Pipeline, paths: list[Path], n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities, zero for classes unseen in training."""
    proba = np.zeros((len(paths), n_classes))
    proba[:, model.classes_] = model.predict_proba(features(paths))
    return proba
