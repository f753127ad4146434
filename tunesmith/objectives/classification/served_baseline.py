"""MLflow "models from code" definition of a tunesmith classical baseline as a served model.

The artifact `baseline` is the MLflow sklearn model evaluate fitted and measured (TF-IDF+LR
on texts, or logistic regression on pixel + colour-histogram features of images). It answers
the columns the fine-tuned pyfunc does (`label`, `score`, `prob_<label>`), so `tunesmith
predict` and evaluate's champion re-score work the same whichever family is champion. Like
the served classifiers (objectives/*/served.py) it depends on mlflow, scikit-learn, numpy
and pandas (and pillow for images), never on tunesmith: the image features are computed
here, the same way as tunesmith/objectives/image_classification/baseline.py
(tests/test_register.py checks they agree).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

THUMB = 16
BINS = 8


def image_features(paths: list[str]) -> np.ndarray:
    """(n, 16*16 + 3*8): 16x16 grey pixels and an 8-bin histogram per RGB channel."""
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


class BaselineClassifier(PythonModel):
    """Texts (or image paths) in, `label`, `score`, `prob_<label>` out."""

    def load_context(self, context: Any) -> None:
        import mlflow.sklearn

        config = context.model_config or {}
        self.labels = [str(v) for v in config["labels"]]
        self.input = str(config.get("input", "text"))
        self.model = mlflow.sklearn.load_model(context.artifacts["baseline"])

    # Hinted with a DataFrame, as the served classifiers: without hints MLflow warns "Add type
    # hints to the predict method" at every log and load.
    def predict(self, context, model_input: pd.DataFrame,  # noqa: ANN001
                params: dict | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            column = self.input if self.input in model_input else model_input.columns[0]
            values = [str(v) for v in model_input[column]]
        else:
            values = [str(v) for v in model_input]
        proba = np.zeros((len(values), len(self.labels)))
        if values:
            features = image_features(values) if self.input == "image" else values
            proba[:, self.model.classes_] = self.model.predict_proba(features)
        out = pd.DataFrame({"label": [self.labels[i] for i in proba.argmax(1)] if values else [],
                            "score": proba.max(1) if values else []})
        for i, name in enumerate(self.labels):
            out[f"prob_{name}"] = proba[:, i]
        return out


set_model(BaselineClassifier())
