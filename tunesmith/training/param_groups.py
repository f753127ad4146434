"""Optimizer parameter groups: head rate multiplier, layer-wise decay, no decay on bias/norm."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunesmith.training.layers import EMBEDDINGS, is_head, num_layers, position
from tunesmith.training.options import TrainOptions


def lr_multiplier(name: str, n_layers: int, opts: TrainOptions) -> float:
    """The factor on `opts.lr` for one parameter.

    Head: `head_lr_mult`. Layer k of n: `layer_decay ** (n - 1 - k)` (top layer 1.0),
    embeddings one step below layer 0; final norms above the top keep 1.0.
    """
    if is_head(name):
        return opts.head_lr_mult
    pos = position(name, n_layers)
    if pos >= n_layers:
        return 1.0
    depth = n_layers if pos == EMBEDDINGS else n_layers - 1 - pos
    return opts.layer_decay**depth


def uses_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and normalisation weights (all 1-D tensors) get no weight decay."""
    return param.ndim >= 2 and "norm" not in name.lower()


def param_groups(
    model: nn.Module, opts: TrainOptions, include_frozen: bool = False
) -> list[dict[str, Any]]:
    """Groups for torch optimizers; each carries `name`, `lr`, `weight_decay`, `is_head`.

    `include_frozen` puts currently frozen weights in too (with their eventual rate), so a
    staged schedule can unfreeze them later without rebuilding the optimizer.
    """
    n = num_layers(model)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not (p.requires_grad or include_frozen):
            continue
        pos = position(name, n)
        where = "head" if is_head(name) else "emb" if pos == EMBEDDINGS else (
            f"layer{pos}" if pos < n else "top"
        )
        decay = uses_weight_decay(name, p)
        key = (where, decay)
        if key not in groups:
            groups[key] = {
                "name": f"{where}/{'decay' if decay else 'no_decay'}",
                "params": [],
                "lr": opts.lr * lr_multiplier(name, n, opts),
                "weight_decay": opts.weight_decay if decay else 0.0,
                "is_head": where == "head",
            }
        groups[key]["params"].append(p)
    return list(groups.values())


def make_optimizer(groups: list[dict[str, Any]], opts: TrainOptions) -> torch.optim.Optimizer:
    """AdamW (the fused kernel where the device has one) or SGD with momentum over `groups`."""
    if opts.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=opts.lr, momentum=opts.momentum)
    return torch.optim.AdamW(groups, lr=opts.lr, fused=fused_adamw_ok(groups) or None)


# torch has fused AdamW kernels for these devices (torch >= 2.4 for cpu); one kernel per
# step over all tensors instead of a loop of small ops: ~10% of a MiniLM CPU step
# (docs/benchmarks.md), and what transformers' own default optimizer uses since torch 2.8.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def fused_adamw_ok(groups: list[dict[str, Any]]) -> bool:
    """True when every parameter is a floating tensor on one device type fused AdamW has."""
    params = [p for g in groups for p in g["params"]]
    kinds = {p.device.type for p in params}
    return (len(kinds) == 1 and kinds <= set(FUSED_ADAMW_DEVICES)
            and all(p.is_floating_point() for p in params))
