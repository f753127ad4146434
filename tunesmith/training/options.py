"""Typed training options as plain dataclasses.

The training core must import on a machine that has only torch, transformers, peft,
accelerate, pandas and pyarrow, so these are stdlib dataclasses rather than pydantic
models. `tunesmith.config` validates them strictly (unknown keys are errors) through
pydantic's dataclass support, via `__pydantic_config__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Method = Literal["full", "freeze", "head_only", "lora", "qlora", "scratch", "staged"]
Optimizer = Literal["adamw", "sgd"]
Scheduler = Literal["linear", "cosine", "constant", "plateau"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

_STRICT = {"extra": "forbid"}


@dataclass
class LoraOptions:
    """peft LoRA settings; empty `target_modules` means the per-family default."""

    __pydantic_config__ = _STRICT

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)


@dataclass
class Stage:
    """One phase of staged training, applied at an epoch boundary.

    `unfreeze`: "head" (head only), an int N (head + top N layers) or "all".
    `lr_scale` multiplies the rates of the body (non-head) weights during this stage;
    the head keeps `lr * head_lr_mult` throughout.
    """

    __pydantic_config__ = _STRICT

    epochs: int = 1
    unfreeze: str | int = "head"
    lr_scale: float = 1.0


@dataclass
class TrainOptions:
    """Everything the `train` step needs besides data paths and the base model."""

    __pydantic_config__ = _STRICT

    method: Method = "full"
    epochs: float = 3.0
    max_steps: int = -1
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9
    scheduler: Scheduler = "linear"
    # Classic transfer-learning recipe: the new head learns faster than the body.
    head_lr_mult: float = 1.0
    # Layer-wise decay: each layer below the top gets `layer_decay` x the rate above; 1.0 = off.
    layer_decay: float = 1.0
    # freeze: embeddings + lowest N layers; negative N means all but the top |N|.
    freeze_layers: int = -2
    lora: LoraOptions = field(default_factory=LoraOptions)
    stages: list[Stage] = field(default_factory=list)
    eval_every_steps: int = 0  # 0 = evaluate (and checkpoint) once per epoch
    log_every_steps: int = 1  # rows of curve.csv; 1 = every optimizer step
    metric_for_best: str = "accuracy"
    early_stopping_patience: int = 2
    seed: int = 42
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    # FSDP for models too large to replicate, e.g. "full_shard auto_wrap" (multi-GPU only).
    fsdp: str = ""
    group_by_length: bool = True
    save_total_limit: int = 2
    warm_start: str = ""  # path of a previous model whose head rows are copied for shared labels
    # image-classification: random resized crop (area share >= augment_min_scale) + h-flip
    augment: bool = True
    augment_min_scale: float = 0.5
    # causal-lm only
    prompt_template: str = "### Instruction:\n{prompt}\n\n### Response:\n"
    packing: bool = True
