"""Staged unfreezing: a schedule of (epochs, what trains, rate scale) applied at epoch starts."""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

from tunesmith.training.layers import set_trainable
from tunesmith.training.options import Stage

log = logging.getLogger(__name__)

# Head alone first (the random head would otherwise push noisy gradients into the body),
# then the top two blocks, then everything at a gentler rate.
DEFAULT_STAGES = [
    Stage(epochs=1, unfreeze="head", lr_scale=1.0),
    Stage(epochs=1, unfreeze=2, lr_scale=0.5),
    Stage(epochs=1, unfreeze="all", lr_scale=0.1),
]


def resolve_stages(stages: list[Stage]) -> list[Stage]:
    """The configured stages, or DEFAULT_STAGES when none are given."""
    return list(stages) or list(DEFAULT_STAGES)


def stage_at(stages: list[Stage], epoch: int) -> Stage:
    """The stage active in 0-based `epoch`; the last stage continues past the schedule."""
    end = 0
    for stage in stages:
        end += stage.epochs
        if epoch < end:
            return stage
    return stages[-1]


def _unfreeze_value(stage: Stage) -> int | str:
    if stage.unfreeze in ("head", 0, "0"):
        return 0
    if stage.unfreeze == "all":
        return "all"
    return int(stage.unfreeze)


class StagedUnfreezing(TrainerCallback):
    """At each epoch start, set `requires_grad` for the stage and scale the body's rates.

    Every weight is in the optimizer from the start (see `param_groups(include_frozen=)`);
    frozen ones simply have no gradient, which AdamW and SGD skip. `lr_scale` applies to
    the body groups; the head keeps its own rate. The scale is kept on each param group
    (`stage_scale`) so it survives a checkpoint resume with the optimizer state.
    """

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = resolve_stages(stages)
        self.current: Stage | None = None

    def on_epoch_begin(
        self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw
    ):
        epoch = math.floor(state.epoch + 1e-6)
        stage = stage_at(self.stages, epoch)
        set_trainable(model, _unfreeze_value(stage))
        if optimizer is not None:
            self._rescale(optimizer, lr_scheduler, stage.lr_scale)
        if stage is not self.current and state.is_world_process_zero:
            log.info("epoch %d: stage unfreeze=%s lr_scale=%g",
                     epoch + 1, stage.unfreeze, stage.lr_scale)
        self.current = stage

    @staticmethod
    def _rescale(optimizer, lr_scheduler, scale: float) -> None:
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
        base_lrs = getattr(scheduler, "base_lrs", None)
        for i, group in enumerate(optimizer.param_groups):
            new = 1.0 if group.get("is_head") else scale
            ratio = new / group.get("stage_scale", 1.0)
            group["stage_scale"] = new
            if ratio == 1.0:
                continue
            group["lr"] *= ratio
            if base_lrs is not None:
                base_lrs[i] *= ratio
