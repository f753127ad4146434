"""Warm start: begin retraining from a previous model, keeping what its head knew.

The previous model's body loads as the starting point. Its output layer is rebuilt row by
row by label *name*: a label both models share keeps its trained row (even if its index
moved), a new label gets a fresh random row, a dropped label's row is discarded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from tunesmith.training.layers import is_head

log = logging.getLogger(__name__)


def model_dir(path: str | Path) -> Path:
    """Accept either a train output dir (holding `model/`) or the HF model dir itself."""
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").is_file() else path


def previous_labels(path: Path) -> list[str]:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def output_layer(model: nn.Module, num_labels: int) -> str:
    """Name of the last head Linear producing `num_labels` logits (e.g. `classifier`)."""
    found = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == num_labels and is_head(name + ".")
    ]
    if not found:
        raise ValueError("no classification output layer found")
    return found[-1]


def copy_head_rows(model: nn.Module, labels: list[str], previous: Path) -> list[str]:
    """Copy the previous output rows of labels shared with `labels`; returns the shared ones."""
    old_labels = previous_labels(previous)
    shared = [name for name in labels if name in old_labels]
    if not shared:
        log.warning("warm start %s: no label shared with %s; random head", previous, labels)
        return []
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(previous.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    layer = output_layer(model, len(labels))
    module = model.get_submodule(layer)
    old_w, old_b = state[f"{layer}.weight"], state.get(f"{layer}.bias")
    if old_w.shape[0] != len(old_labels) or old_w.shape[1] != module.in_features:
        raise ValueError(f"warm start {previous}: {layer} has shape {tuple(old_w.shape)}")
    with torch.no_grad():
        for name in shared:
            new_i, old_i = labels.index(name), old_labels.index(name)
            module.weight[new_i] = old_w[old_i]
            if module.bias is not None and old_b is not None:
                module.bias[new_i] = old_b[old_i]
    log.info("warm start: copied head rows for %d/%d labels %s", len(shared), len(labels), shared)
    return shared
