"""Where a parameter sits in a network: embeddings, layer k, or the task head.

Freezing, staged unfreezing and layer-wise learning-rate decay all need that position.
Names differ per family (`bert.encoder.layer.3.`, `transformer.h.3.`, `model.layers.3.`,
`resnet.encoder.stages.3.`, `vit.layers.3.`, `efficientnet.encoder.blocks.3.`),
so positions come from name patterns rather than per-family tables.

Two rules keep "frozen" meaning frozen:
- parameters a checkpoint declares untrainable (config `tunesmith_frozen_parameters`,
  fnmatch patterns: EfficientNet-Lite0's neutral squeeze-excite gates) never get
  `requires_grad`, whatever a method or a staged schedule asks (`set_trainable`);
- a BatchNorm whose affine parameters are frozen runs in eval mode during training, so
  its running statistics stay those of the checkpoint (`hold_frozen_batchnorm`);
  `train.freeze_batchnorm` freezes every BatchNorm that way (`freeze_batchnorm`).
"""

from __future__ import annotations

import fnmatch
import re

from torch import nn

# CNNs (ResNet, ConvNeXt) count a stage as a layer: `encoder.stages.2.layers.0.` is stage 2,
# found first because the leftmost match wins. EfficientNet counts its blocks (0..15 in B0
# and Lite0); its config's `num_hidden_layers` (4 x blocks) is not a layer count.
_LAYER = re.compile(r"\.(?:stages|layer|layers|h|block|blocks)\.(\d+)\.")
# EfficientNet's last 1x1 convolution + BatchNorm (`encoder.top_conv`, `encoder.top_bn`)
# belong to the pretrained body (Keras keeps them with include_top=False): they count as
# one more layer above the last block, so head_only freezes them and freeze -2 trains them.
_TOP = re.compile(r"\.top_(?:conv|bn)\.")
_EMBED = re.compile(r"(embed|\.wte\.|\.wpe\.|word_embeddings|position_embeddings)")
# Modules a classification model adds (or re-purposes) on top of the body. BERT's pooler
# feeds the classifier and is counted as head so a linear probe can adapt it too.
HEAD_NAMES = ("classifier", "score", "pre_classifier", "pooler", "lm_head")
FROZEN_KEY = "tunesmith_frozen_parameters"  # config.json key (tunesmith/bases/efficientnet_lite0)

EMBEDDINGS = -1  # position of embedding parameters


def num_layers(model: nn.Module) -> int:
    """Number of blocks, counted from parameter names (the config when no name has one).

    The names are the truth: EfficientNet's config says 64 hidden layers for 16 blocks.
    """
    names = [name for name, _ in model.named_parameters()]
    found = {int(m.group(1)) for name in names if (m := _LAYER.search(name))}
    if found:
        return max(found) + 1 + any(_TOP.search(name) for name in names)
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    return int(n) if n else 0


def is_head(name: str) -> bool:
    """True for parameters of the task head (and of peft's saved copies of it)."""
    parts = name.split(".")
    return any(p in HEAD_NAMES for p in parts)


def position(name: str, n_layers: int) -> int:
    """-1 embeddings, 0..n-1 layer, n for the head and final norms above the top."""
    if is_head(name):
        return n_layers
    if _TOP.search(name):
        return n_layers - 1
    if m := _LAYER.search(name):
        return int(m.group(1))
    if _EMBED.search(name):
        return EMBEDDINGS
    # Final layer norms (`ln_f`, `norm`) sit above the last block.
    return n_layers


def frozen_names(model: nn.Module) -> set[str]:
    """Parameters the model's config declares untrainable (`tunesmith_frozen_parameters`).

    Patterns are fnmatch, where `*` also matches dots, so peft's `base_model.model.`
    prefix still matches.
    """
    config = getattr(model, "config", None)
    patterns = list(getattr(config, FROZEN_KEY, None) or [])
    if not patterns:
        return set()
    return {name for name, _ in model.named_parameters()
            if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def _held_batchnorm(model: nn.Module) -> set[str]:
    """Parameters of the BatchNorms `freeze_batchnorm` froze (they stay frozen)."""
    return {f"{name}.{leaf}" if name else leaf
            for name, m in model.named_modules() if getattr(m, "_tunesmith_bn_frozen", False)
            for leaf, _ in m.named_parameters(recurse=False)}


def set_trainable(model: nn.Module, top_layers: int | str) -> None:
    """Train the head plus the top `top_layers` blocks ("all" = everything, 0 = head only).

    Parameters peft marked as adapters (`lora_`) stay trainable whatever the setting,
    so LoRA and staged schedules compose; parameters the config declares frozen, and
    BatchNorms `freeze_batchnorm` froze, stay frozen.
    """
    n = num_layers(model)
    lowest = -2 if top_layers == "all" else n - int(top_layers)
    frozen = frozen_names(model) | _held_batchnorm(model)
    for name, p in model.named_parameters():
        pos = position(name, n)
        p.requires_grad = name not in frozen and ("lora_" in name or pos >= n or pos >= lowest)


def keep_declared_frozen(model: nn.Module) -> int:
    """requires_grad=False on the config's frozen parameters; returns how many."""
    frozen = frozen_names(model)
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad = False
    return len(frozen)


def freeze_bottom(model: nn.Module, freeze_layers: int) -> None:
    """Freeze embeddings + the lowest N blocks; negative N freezes all but the top |N|."""
    n = num_layers(model)
    frozen = n + freeze_layers if freeze_layers < 0 else freeze_layers
    frozen = max(0, min(n, frozen))
    set_trainable(model, n - frozen)


def freeze_batchnorm(model: nn.Module) -> int:
    """requires_grad=False on every BatchNorm's affine weights (`train.freeze_batchnorm`),
    so `hold_frozen_batchnorm` keeps all their statistics too; returns how many layers."""
    frozen = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad = False
            m._tunesmith_bn_frozen = True  # so a staged schedule's set_trainable keeps it
            frozen += 1
    return frozen


def _batchnorm_follows_its_weights(module: nn.Module, args: tuple) -> None:
    # A forward pre-hook: Trainer (and most loops) call model.train() before each step,
    # which flips every BatchNorm back to training; this puts a frozen one back to eval.
    if module.training and not module.weight.requires_grad:
        module.training = False


def hold_frozen_batchnorm(model: nn.Module) -> int:
    """Frozen BatchNorm layers keep their running statistics: returns how many BN layers
    got the hook (every affine one; it acts only while the layer's weight is frozen).

    A BatchNorm in training mode normalises with the batch's statistics and moves its
    running mean/var even when no parameter has a gradient, so layers frozen by `freeze`,
    `head_only`, LoRA or a staged schedule would still change. Idempotent; the check is
    per forward, so a staged schedule that unfreezes a layer lets its BatchNorm train again.
    """
    hooked = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            if not getattr(m, "_tunesmith_bn_hook", False):
                m.register_forward_pre_hook(_batchnorm_follows_its_weights)
                m._tunesmith_bn_hook = True
            hooked += 1
    return hooked


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
