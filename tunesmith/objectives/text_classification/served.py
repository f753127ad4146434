"""MLflow "models from code" definition of a tunesmith text classifier.

MLflow copies this file into every logged model and executes it on load, so the model
depends on mlflow, torch, transformers and pandas only, not on tunesmith. That is also
why tunesmith never imports it: running it is what registers the model object with MLflow.
The transformers weights and tokenizer travel as the `model` artifact.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class HFTextClassifier(PythonModel):
    """Text in (a `text` column or a list of str), `label`, `score`, `prob_<label>` out."""

    def load_context(self, context: Any) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = context.artifacts["model"]
        config = context.model_config or {}
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False).eval()
        self.max_length = int(config.get("max_length", 128))
        self.batch_size = int(config.get("batch_size", 64))
        id2label = self.model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]
        self.torch = torch

    # Hinted with a DataFrame: without hints MLflow warns at every log and load ("Add type
    # hints to the predict method"); the explicit signature given at log time stays the contract.
    def predict(self, context, model_input: pd.DataFrame,  # noqa: ANN001
                params: dict | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text" if "text" in model_input else model_input.columns[0]]
        else:
            texts = model_input
        texts = [str(t) for t in texts]
        # Batches of similar length pad less (a batch pads to its longest text): about 2x
        # faster on mixed-length input. `order` puts the rows back afterwards.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in order[start:start + self.batch_size]], truncation=True,
                    padding=True, max_length=self.max_length, return_tensors="pt",
                )
                probs.append(self.model(**batch).logits.float().softmax(-1))
        proba = None
        if probs:
            sorted_proba = self.torch.cat(probs)
            proba = self.torch.empty_like(sorted_proba)
            proba[order] = sorted_proba
            proba = proba.numpy()
        out = pd.DataFrame(
            {
                "label": [self.labels[i] for i in proba.argmax(1)] if probs else [],
                "score": proba.max(1) if probs else [],
            }
        )
        for i, name in enumerate(self.labels):
            out[f"prob_{name}"] = proba[:, i] if probs else []
        return out


set_model(HFTextClassifier())
