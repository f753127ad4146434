"""train: fine-tune the base model on the tokenized splits (see tunesmith/training/run.py).

Maps the typed Config onto a `TrainRequest`; the training core itself never sees pydantic,
so the same core runs on an accelerator machine with only torch/transformers/peft. The
task type's training functions (model class, data, collator, metrics) are called by the
core through tunesmith.objectives. `train.lr: auto` first runs the `tune` section's search
on the train/val splits (tunesmith/tune.py: Optuna, each trial a child run of the
pipeline's MLflow run) and trains with the best values; the chosen rate is logged on the
run (param and tag `tune.best.train.lr`, metric `train/lr`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.config import Config
from tunesmith.logged import Logged, relative
from tunesmith.steps import narrowed
from tunesmith.train_request import build_request

if TYPE_CHECKING:
    from tunesmith.training.request import TrainSummary

# The training core (torch, transformers: ~10 s to import) is imported inside the functions:
# the flow unpickles TrainResult on every cached run, which must not pay for it.


@dataclass
class TrainResult:
    model_dir: Path  # cfg.dirs.model/model: the final HF model (LoRA merged)
    method: str
    metric: str
    val_metric: float
    trainable_params: int
    total_params: int
    wall_time_s: float
    resumed: bool
    lr: float | None = None  # the rate used (the method's default, or chosen by `auto`)
    tuned: dict | None = None  # `train.lr: auto`: the values the search chose
    logged: Logged = field(default_factory=Logged, repr=False)


@narrowed
def train(cfg: Config) -> TrainResult:
    """Train per `cfg.train`; writes cfg.dirs.model/{model,adapter,train_summary.json,curve.csv}."""
    from tunesmith.training.launch import is_launched, launch
    from tunesmith.training.run import train_model

    tuned, options = None, None
    if cfg.train.lr == "auto":
        from tunesmith import tune

        tuned = tune.auto(cfg)
        options = tune.apply(dataclasses.replace(cfg.train, lr=None), tuned.best)
    req = build_request(cfg, options)
    # train.processes/nodes: torchrun workers, rank 0 writes; either way a TrainSummary
    summary = launch(req) if is_launched(req.options) else train_model(req)
    logged = _logged(cfg, summary)
    if tuned is not None:
        logged = logged.merged(Logged(
            params={f"tune.best.{k}": str(v) for k, v in tuned.best.items()},
            tags={f"tune.best.{k}": str(v) for k, v in tuned.best.items()},
            metrics={f"tune/best_val_{tuned.metric}": tuned.value,
                     "tune/seconds": tuned.seconds, "tune/trials": len(tuned.trials)}))
    return TrainResult(
        model_dir=cfg.dirs.model / "model",
        method=summary.method,
        metric=summary.metric,
        val_metric=float(summary.val_metrics.get(summary.metric, float("nan"))),
        trainable_params=summary.trainable_params,
        total_params=summary.total_params,
        wall_time_s=round(summary.wall_time_s, 2),
        resumed=summary.resumed_from is not None,
        lr=summary.lr,
        tuned=None if tuned is None else tuned.best,
        logged=logged,
    )


def _logged(cfg: Config, summary: TrainSummary) -> Logged:
    """The curve as step metrics `curve/<column>`, the summary's numbers as `train/*`."""
    from tunesmith.plots import read_curve

    series = []
    curve = read_curve(cfg.dirs.model / "curve.csv")
    if curve is not None:
        numeric = curve.select_dtypes("number")
        steps = numeric["step"] if "step" in numeric else range(len(numeric))
        series = [(f"curve/{col}", float(value), int(step))
                  for col in numeric.columns if col != "step"
                  for step, value in zip(steps, numeric[col], strict=False) if value == value]
    return Logged(
        metrics={f"train/{k}": v for k, v in dataclasses.asdict(summary).items()
                 if isinstance(v, int | float) and not isinstance(v, bool)},
        series=series,
        artifacts=[(relative(cfg.dirs.model / name, cfg.root), "training")
                   for name in ("curve.csv", "train_summary.json")],
    )
