"""MLflow "models from code" definition of a tunesmith image classifier.

Like the text classifier's served.py: MLflow copies this file into every logged model and
executes it on load, so it depends on mlflow, torch, transformers, pillow and pandas only, never on
tunesmith. The model weights and its image processor travel as the `model` artifact, so
preprocessing (resize, centre crop, normalisation) is exactly the training one, offline.
"""

from __future__ import annotations

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class HFImageClassifier(PythonModel):
    """Image paths in (an `image` column or a list of str), `label`, `score`, `prob_*` out."""

    def load_context(self, context):  # noqa: ANN001, ANN201
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        path = context.artifacts["model"]
        config = context.model_config or {}
        # The PIL backend: torchvision is optional and has no CPU wheel everywhere.
        self.processor = AutoImageProcessor.from_pretrained(path, backend="pil")
        self.model = AutoModelForImageClassification.from_pretrained(path).eval()
        self.batch_size = int(config.get("batch_size", 64))
        id2label = self.model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]
        self.torch = torch

    # Hinted with a DataFrame, as the text classifier's served.py: without hints MLflow warns
    # "Add type hints to the predict method" at every log and load.
    def predict(self, context, model_input: pd.DataFrame,  # noqa: ANN001
                params: dict | None = None) -> pd.DataFrame:
        from PIL import Image

        if isinstance(model_input, pd.DataFrame):
            paths = model_input["image" if "image" in model_input else model_input.columns[0]]
        else:
            paths = model_input
        paths = [str(p) for p in paths]
        probs = []
        with self.torch.inference_mode():
            for start in range(0, len(paths), self.batch_size):
                images = []
                for p in paths[start:start + self.batch_size]:
                    with Image.open(p) as img:
                        images.append(img.convert("RGB"))
                batch = self.processor(images, return_tensors="pt")
                probs.append(self.model(**batch).logits.float().softmax(-1))
        proba = self.torch.cat(probs).numpy() if probs else None
        out = pd.DataFrame({
            "label": [self.labels[i] for i in proba.argmax(1)] if probs else [],
            "score": proba.max(1) if probs else [],
        })
        for i, name in enumerate(self.labels):
            out[f"prob_{name}"] = proba[:, i] if probs else []
        return out


set_model(HFImageClassifier())
