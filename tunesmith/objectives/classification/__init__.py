"""What text and image classification share: the protocol functions that are the same for
both (imported by each task package) and, in `evaluation`, the scoring, plots, collapse check
and champion re-score of a classifier.

Light at import, like every task package: the training core imports it on an accelerator
machine without pydantic, MLflow or GX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tunesmith.config import Config
    from tunesmith.training.options import TrainOptions


def measure(cfg: Config) -> tuple[dict, list[str]]:
    """`dataset add`: settings measured on the data; none for a classifier (its recipe is in
    the task's `describe`)."""
    return {}, []


def training_loss() -> Any | None:
    return None  # the head's own cross-entropy (`labels`)


def metric_fns() -> tuple[Any, Any]:
    from tunesmith.training.metrics import argmax_logits, classification_metrics

    return classification_metrics, argmax_logits


def best_metric(opts: TrainOptions) -> tuple[str, bool]:
    from tunesmith.training.metrics import direction

    return opts.metric_for_best, direction(opts.metric_for_best)


def finish_val_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return metrics


def serve(model: Any, inputs: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    """The MLflow model's own predict: label, score and prob_* per row."""
    return model.predict(inputs)
