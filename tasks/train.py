"""train: fine-tune the base model on the tokenized splits (see tunesmith/training/run.py).

Maps the typed Config onto a `TrainRequest`; the training core itself never sees pydantic,
so the same core runs on an accelerator machine with only torch/transformers/peft.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.config import Config
from tunesmith.errors import ConfigError, DataError
from tunesmith.models import resolve_base

if TYPE_CHECKING:
    from tunesmith.training.run import TrainRequest

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


def build_request(cfg: Config) -> TrainRequest:
    """Config -> TrainRequest; one-line errors for a missing tokenize output or label drift."""
    from tunesmith.training.data import read_meta
    from tunesmith.training.methods import check_environment
    from tunesmith.training.run import TrainRequest

    check_environment(cfg.train)  # e.g. QLoRA without CUDA: fail before touching anything
    tokenized = cfg.dirs.tokenized
    meta = read_meta(tokenized)
    if not meta or not (tokenized / "train").is_dir() or not (tokenized / "val").is_dir():
        raise DataError(f"{tokenized}: no tokenized train/val splits: run `tunesmith step tokenize "
                        f"--dataset {cfg.name}` first")
    if cfg.task != "causal-lm" and meta.get("labels") != cfg.labels:
        raise DataError(f"{tokenized / 'meta.json'}: labels {meta.get('labels')} differ from the "
                        f"config's {cfg.labels}: rerun the tokenize step")
    warm = cfg.train.warm_start
    if warm:
        path = Path(warm) if Path(warm).is_absolute() else cfg.root / warm
        if not path.is_dir():
            raise ConfigError(f"train.warm_start: {path} is not a directory")
        cfg = cfg.model_copy(update={"train": _with_warm_start(cfg, str(path))})
    return TrainRequest(
        base_model=resolve_base(cfg.model.base, cfg.root),
        task=cfg.task,
        labels=list(cfg.labels),
        tokenized_dir=tokenized,
        output_dir=cfg.dirs.model,
        checkpoint_dir=cfg.dirs.state / "checkpoints",
        options=cfg.train,
        data_digest=json.dumps(meta.get("data_digest", ""), sort_keys=True),
    )


def _with_warm_start(cfg: Config, path: str):
    from dataclasses import replace

    return replace(cfg.train, warm_start=path)


def train(cfg: Config) -> TrainResult:
    """Train per `cfg.train`; writes cfg.dirs.model/{model,adapter,train_summary.json,curve.csv}."""
    from tunesmith.training.run import train_model

    summary = train_model(build_request(cfg))
    return TrainResult(
        model_dir=cfg.dirs.model / "model",
        method=summary.method,
        metric=summary.metric,
        val_metric=float(summary.val_metrics.get(summary.metric, float("nan"))),
        trainable_params=summary.trainable_params,
        total_params=summary.total_params,
        wall_time_s=round(summary.wall_time_s, 2),
        resumed=summary.resumed_from is not None,
    )
