"""Where a parameter sits in a transformer: embeddings, layer k, or the task head.

Freezing, staged unfreezing and layer-wise learning-rate decay all need that position.
Names differ per family (`bert.encoder.layer.3.`, `transformer.h.3.`, `model.layers.3.`,
`resnet.encoder.stages.3.`, `vit.layers.3.`),
so positions come from name patterns rather than per-family tables.
"""

from __future__ import annotations

import re

from torch import nn

# CNNs (ResNet, ConvNeXt) count a stage as a layer: `encoder.stages.2.layers.0.` is stage 2,
# found first because the leftmost match wins.
_LAYER = re.compile(r"\.(?:stages|layer|layers|h|block|blocks)\.(\d+)\.")
_EMBED = re.compile(r"(embed|\.wte\.|\.wpe\.|word_embeddings|position_embeddings)")
# Modules a classification model adds (or re-purposes) on top of the body. BERT's pooler
# feeds the classifier and is counted as head so a linear probe can adapt it too.
HEAD_NAMES = ("classifier", "score", "pre_classifier", "pooler", "lm_head")

EMBEDDINGS = -1  # position of embedding parameters


def num_layers(model: nn.Module) -> int:
    """Number of transformer blocks (from the config, else counted from parameter names)."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if n:
        return int(n)
    found = {int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))}
    return max(found) + 1 if found else 0


def is_head(name: str) -> bool:
    """True for parameters of the task head (and of peft's saved copies of it)."""
    parts = name.split(".")
    return any(p in HEAD_NAMES for p in parts)


def position(name: str, n_layers: int) -> int:
    """-1 embeddings, 0..n-1 transformer layer, n for the head and final norms above the top."""
    if is_head(name):
        return n_layers
    if m := _LAYER.search(name):
        return int(m.group(1))
    if _EMBED.search(name):
        return EMBEDDINGS
    # Final layer norms (`ln_f`, `norm`) sit above the last block.
    return n_layers


def set_trainable(model: nn.Module, top_layers: int | str) -> None:
    """Train the head plus the top `top_layers` blocks ("all" = everything, 0 = head only).

    Parameters peft marked as adapters (`lora_`) stay trainable whatever the setting,
    so LoRA and staged schedules compose.
    """
    n = num_layers(model)
    lowest = -2 if top_layers == "all" else n - int(top_layers)
    for name, p in model.named_parameters():
        pos = position(name, n)
        p.requires_grad = "lora_" in name or pos >= n or pos >= lowest


def freeze_bottom(model: nn.Module, freeze_layers: int) -> None:
    """Freeze embeddings + the lowest N blocks; negative N freezes all but the top |N|."""
    n = num_layers(model)
    frozen = n + freeze_layers if freeze_layers < 0 else freeze_layers
    frozen = max(0, min(n, frozen))
    set_trainable(model, n - frozen)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
