"""Classification metrics from labels and class probabilities (numpy + scikit-learn only).

Every function takes `y_true` as class ids (index in `labels`) and `proba` as an
(n, n_classes) array, so the fine-tuned model, the TF-IDF baseline and the re-scored
champion are measured by exactly the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _skm():
    # sklearn takes seconds to import; the flow imports this module on every cached run.
    from sklearn import metrics

    return metrics


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, labels: list[str], n_bins: int = 10
) -> dict[str, Any]:
    """Accuracy, macro and per-class P/R/F1, MCC, ROC-AUC, PR-AUC, ECE and the confusion matrix.

    ROC-AUC and PR-AUC are binary on the last label for two classes and macro one-vs-rest
    otherwise; a class absent from `y_true` makes its AUC undefined, reported as None.
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    ids = list(range(len(labels)))
    y_pred = proba.argmax(axis=1)
    p, r, f, support = _skm().precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(_skm().accuracy_score(y_true, y_pred)),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
        "mcc": float(_skm().matthews_corrcoef(y_true, y_pred)) if len(y_true) else 0.0,
        "roc_auc": _roc_auc(y_true, proba, ids),
        "pr_auc": _pr_auc(y_true, proba, ids),
        "ece": expected_calibration_error(y_true, proba, n_bins),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": _skm().confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }
    return out


def _roc_auc(y_true: np.ndarray, proba: np.ndarray, ids: list[int]) -> float | None:
    present = set(y_true.tolist())
    if len(ids) == 2:
        return float(_skm().roc_auc_score(y_true, proba[:, 1])) if len(present) == 2 else None
    if not set(ids) <= present:
        return None
    return float(_skm().roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
                                      labels=ids))


def _pr_auc(y_true: np.ndarray, proba: np.ndarray, ids: list[int]) -> float | None:
    """Average precision (the step-wise PR-AUC sklearn recommends over trapezoids)."""
    present = set(y_true.tolist())
    if len(ids) == 2:
        return float(_skm().average_precision_score(y_true, proba[:, 1])) if 1 in present else None
    if not set(ids) <= present:
        return None
    onehot = np.eye(len(ids))[y_true]
    return float(_skm().average_precision_score(onehot, proba, average="macro"))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by size."""
    if len(y_true) == 0:
        return 0.0
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    # Right-closed bins so a confidence of exactly 1.0 lands in the last bin.
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def curve_points(
    y_true: np.ndarray, proba: np.ndarray, labels: list[str]
) -> dict[str, list[dict[str, float | str]]]:
    """ROC and PR curve points per class (one-vs-rest; binary: the positive = last label).

    Returned as row lists, ready for DVC plots (`x`/`y` fields, `class` as the series).
    """
    ids = range(len(labels)) if len(labels) > 2 else [len(labels) - 1]
    roc: list[dict[str, float | str]] = []
    pr: list[dict[str, float | str]] = []
    for i in ids:
        truth = (np.asarray(y_true) == i).astype(int)
        if truth.min() == truth.max():
            continue  # a curve needs both positives and negatives
        fpr, tpr, _ = _skm().roc_curve(truth, proba[:, i])
        prec, rec, _ = _skm().precision_recall_curve(truth, proba[:, i])
        roc += [
            {"class": labels[i], "fpr": float(a), "tpr": float(b)}
            for a, b in zip(fpr, tpr, strict=True)
        ]
        pr += [
            {"class": labels[i], "recall": float(a), "precision": float(b)}
            for a, b in zip(rec, prec, strict=True)
        ]
    return {"roc": roc, "pr": pr}


def summary(m: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of `classification_metrics` output (for MLflow and the gate)."""
    return {
        k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
