"""Validation metrics computed inside the Trainer (numpy only: no sklearn on GPU machines)."""

from __future__ import annotations

import numpy as np


def classification_metrics(eval_pred) -> dict[str, float]:
    """accuracy and macro F1 from argmax predictions."""
    preds, labels = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
    f1s = []
    for c in np.union1d(preds, labels):
        tp = np.sum((preds == c) & (labels == c))
        denom = np.sum(preds == c) + np.sum(labels == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float(np.mean(preds == labels)), "f1_macro": float(np.mean(f1s))}


def argmax_logits(logits, labels):
    """Keep only predicted ids during eval, not the full logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def direction(metric: str) -> bool:
    """True when a larger `metric` is better (losses and perplexity are the other way)."""
    return not any(k in metric for k in ("loss", "perplexity"))
