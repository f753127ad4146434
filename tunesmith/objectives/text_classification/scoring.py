"""Score texts with a trained sequence classifier: probabilities and latency.

The registry's pyfunc (tunesmith/objectives/text_classification/served.py) repeats the length-sorted
batching, because MLflow runs that file without tunesmith installed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import EnvironmentProblem


def load_classifier(path: Path, labels: list[str]) -> tuple[Any, Any]:
    """The trained model and its tokenizer; checks its labels match the dataset's."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (path / "config.json").is_file():
        raise EnvironmentProblem(f"{path}: no trained model here; run the train step first")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False).eval()
    names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    if names != labels:
        raise EnvironmentProblem(
            f"{path}/config.json: id2label {names} does not match the dataset labels {labels}")
    return model, tokenizer


def predict_proba(model: Any, tokenizer: Any, texts: list[str], batch_size: int,
                  max_length: int) -> np.ndarray:
    """Softmax probabilities, (len(texts), num_labels)."""
    import torch

    # Batches of similar length pad less (a batch pads to its longest text); undone below.
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer([texts[i] for i in order[start:start + batch_size]],
                              truncation=True, padding=True, max_length=max_length,
                              return_tensors="pt")
            chunks.append(model(**batch).logits.float().softmax(-1).numpy())
    if not chunks:
        return np.zeros((0, model.config.num_labels))
    proba = np.empty_like(np.concatenate(chunks))
    proba[order] = np.concatenate(chunks)
    return proba


def latency(model: Any, tokenizer: Any, sample: list[str], max_len: int) -> dict[str, float]:
    """Milliseconds per example over `sample`, one at a time and in one batch."""
    n = max(len(sample), 1)
    predict_proba(model, tokenizer, sample[:2], 2, max_len)  # warm-up: first call allocates
    t0 = time.perf_counter()
    for text in sample:
        predict_proba(model, tokenizer, [text], 1, max_len)
    t1 = time.perf_counter()
    predict_proba(model, tokenizer, sample, n, max_len)
    t2 = time.perf_counter()
    return {"latency_ms_batch1": 1000 * (t1 - t0) / n, "latency_ms_batched": 1000 * (t2 - t1) / n,
            "latency_batch_size": float(len(sample))}
