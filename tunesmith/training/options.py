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
ClassWeights = Literal["none", "balanced"]

_STRICT = {"extra": "forbid"}

# ------------------------------------------------------------- defaults per method
# `train.lr: null` (params.yaml) means the method's rate below, `train.epochs: null` its
# epochs; a value the user sets (params.yaml, datasets/NAME.yaml, --set) always wins.
# Config loading resolves them (tunesmith.config), so step cache keys, dvc.yaml's inputs
# files and the MLflow params all see the number actually used. A task type may override
# a rate in its LR_DEFAULTS (a dict keyed like these, per optimizer).
# docs/training.md lists them; docs/method-comparison.md has the measurements.
LR_DEFAULTS: dict[str, dict[str, float]] = {
    "adamw": {
        # Full fine-tuning of a pretrained encoder: BERT's recommended 2e-5..5e-5 (Devlin et
        # al. 2019, appendix A.3), the top of that range for the small MiniLM; it is also
        # transformers' TrainingArguments default.
        "full": 5e-5,
        # Top 2 blocks + head: fewer weights move, so a rate between full and head-only
        # (2e-4 reached 0.844 dev accuracy on SST-2 8k, docs/method-comparison.md).
        "freeze": 2e-4,
        # Linear probe on frozen features: only the new head (and BERT's pooler) learns, from
        # random init, with no pretrained weights to disturb: ~100x full's rate, "head-only
        # higher still". 2e-3 left the SST-2 8k probe improving at its last epoch
        # (docs/method-comparison.md); 5e-3 is stable on a linear head.
        "head_only": 5e-3,
        # LoRA adapters start at zero and are low-rank: rates an order of magnitude above full
        # fine-tuning (Hu et al. 2021, Table 9: 4e-4..5e-4 for RoBERTa-base on GLUE). The
        # full-FT rate (5e-5) left LoRA predicting the majority class on SMS spam (13%).
        "lora": 5e-4,
        # QLoRA: the LoRA rate (Dettmers et al. 2023 use 2e-4 for 7B+ models; small models
        # take LoRA's higher rate).
        "qlora": 5e-4,
        # From random init there is no pretrained solution to stay near: higher (BERT
        # pretraining used 1e-4, Devlin et al. 2019) and longer (EPOCH_DEFAULTS).
        "scratch": 1e-4,
        # Staged: the head alone at this rate first, then the body at lr_scale x (0.5, 0.1 by
        # default): the top two blocks at 2.5e-4 (about freeze's 2e-4), then every layer at
        # 5e-5 (full's rate), the head keeping 5e-4 (10x the body, a common head multiplier).
        # 1e-4 left the random head nearly untrained after its epoch alone, and the model
        # predicted the majority class on a 10%-positive SST-2 subset (macro F1 0.51,
        # docs/method-comparison.md).
        "staged": 5e-4,
    },
    # SGD with momentum (the image recipe): rates ~10-20x AdamW's. 1e-3 for the pretrained
    # body is the PyTorch transfer-learning tutorial's and the hot-dog recipe's
    # (docs/image-classification.md); a fresh head or adapter alone takes 10x that; from
    # scratch 0.1 at batch 256 (He et al. 2016), linearly scaled to batch 16-32: ~1e-2.
    "sgd": {"full": 1e-3, "freeze": 1e-3, "head_only": 1e-2, "lora": 1e-2, "qlora": 1e-2,
            "scratch": 1e-2, "staged": 1e-3},
}
DEFAULT_EPOCHS = 3.0
# Random init needs many more passes than adapting pretrained weights (early stopping on
# the val metric still ends it when it stops improving).
EPOCH_DEFAULTS: dict[str, float] = {"scratch": 10.0}


def default_lr(method: str, optimizer: str,
               overrides: dict[str, dict[str, float]] | None = None) -> float:
    """The rate `train.lr: null` means for `method` with `optimizer` (a task's overrides first)."""
    return {**LR_DEFAULTS[optimizer], **(overrides or {}).get(optimizer, {})}[method]


def default_epochs(method: str) -> float:
    return EPOCH_DEFAULTS.get(method, DEFAULT_EPOCHS)


def resolve_defaults(opts: TrainOptions,
                     lr_overrides: dict[str, dict[str, float]] | None = None) -> TrainOptions:
    """`opts` with `lr: None` and `epochs: None` replaced by the method's defaults (in place,
    and returned). `lr: "auto"` is left for the tuner (tunesmith.tune) to choose."""
    if opts.lr is None:
        opts.lr = default_lr(opts.method, opts.optimizer, lr_overrides)
    if opts.epochs is None:
        opts.epochs = default_epochs(opts.method)
    return opts


# ------------------------------------------------------------- allowed ranges
# field -> (low, high, low allowed, high allowed); None: unbounded. A value outside is one
# line naming the key when the config loads (pydantic calls __post_init__) and when a
# launched worker builds its options, instead of a traceback steps later (a batch of 0 rows
# trained "fine" until the Trainer divided by it).
Range = tuple[float | None, float | None, bool, bool]
POSITIVE: Range = (0, None, False, True)
AT_LEAST_0: Range = (0, None, True, True)
AT_LEAST_1: Range = (1, None, True, True)
SHARE: Range = (0, 1, True, False)  # [0, 1)
RANGES: dict[str, Range] = {
    "epochs": POSITIVE, "lr": POSITIVE, "batch_size": AT_LEAST_1, "batch_tokens": AT_LEAST_0,
    "eval_batch_size": AT_LEAST_1, "grad_accum": AT_LEAST_1, "max_grad_norm": POSITIVE,
    "weight_decay": AT_LEAST_0, "warmup_ratio": SHARE, "momentum": SHARE,
    "head_lr_mult": POSITIVE, "layer_decay": (0, 1, False, True), "eval_every_steps": AT_LEAST_0,
    "log_every_steps": AT_LEAST_1, "early_stopping_patience": AT_LEAST_0,
    "save_total_limit": AT_LEAST_1, "processes": AT_LEAST_1, "nodes": AT_LEAST_1,
    "seed": AT_LEAST_0, "augment_min_scale": (0, 1, False, True),
    # lora.*, stages[].*
    "r": AT_LEAST_1, "alpha": POSITIVE, "dropout": SHARE, "lr_scale": AT_LEAST_0,
}


def check_ranges(obj: object, prefix: str) -> None:
    """Raise ValueError naming `prefix.field` and its range for the first value outside it."""
    for name, (low, high, low_ok, high_ok) in RANGES.items():
        value = getattr(obj, name, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # unset (None) or a word ("auto"): checked by its type
        if (low is not None and (value < low or (value == low and not low_ok))) or \
                (high is not None and (value > high or (value == high and not high_ok))):
            raise ValueError(f"{prefix}{name}: must be {_shown(low, high, low_ok, high_ok)}, "
                             f"got {value:g}")
    steps = getattr(obj, "max_steps", None)
    if isinstance(steps, int) and steps != -1 and steps < 1:
        raise ValueError(f"{prefix}max_steps: must be -1 (off: train.epochs decide) or >= 1, "
                         f"got {steps}")


def _shown(low, high, low_ok, high_ok) -> str:
    if high is None:
        return f"{'>=' if low_ok else '>'} {low:g}"
    return f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"


@dataclass
class LoraOptions:
    """peft LoRA settings; empty `target_modules` means the per-family default."""

    __pydantic_config__ = _STRICT

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_ranges(self, "train.lora.")


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

    def __post_init__(self) -> None:
        check_ranges(self, "train.stages[].")


@dataclass
class TrainOptions:
    """Everything the `train` step needs besides data paths and the base model."""

    __pydantic_config__ = _STRICT

    method: Method = "full"
    epochs: float | None = None  # None: the method's (default_epochs)
    max_steps: int = -1
    # None: the method's rate (LR_DEFAULTS); "auto": chosen on the val split before training
    # (tunesmith.tune, a short Optuna search over the `tune` section's space)
    lr: float | Literal["auto"] | None = None
    batch_size: int = 32
    # The most tokens in one micro-batch (rows x the padded width; packed: the sum of lengths):
    # longer rows train in more, smaller micro-batches with gradient accumulation, so about
    # `batch_size` rows still make one optimizer step and memory follows tokens, not rows
    # (tunesmith.training.data.TokenBudgetBatchSampler). None: the task type's BATCH_TOKENS
    # for the device, chosen when training starts; 0: off, micro-batches of `batch_size` rows.
    batch_tokens: int | None = None
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
    # Macro F1, not accuracy: on imbalanced data a model calling everything the majority
    # class has high accuracy and the worst F1 (the gate's primary metric is macro F1 too).
    metric_for_best: str = "f1_macro"
    # balanced: cross-entropy weighted by inverse class frequency in the train split
    # (n / (k * n_c), scikit-learn's "balanced"); classification only.
    class_weights: ClassWeights = "none"
    early_stopping_patience: int = 2
    seed: int = 42
    precision: Precision = "auto"
    # Recompute activations in the backward pass: about a third slower (SmolLM2 LoRA on CPU,
    # 154 vs 229 tokens/s), a fraction of the memory. "auto": on when a single training row
    # is longer than `batch_tokens`, the one case the token budget cannot bound.
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    compile: bool = False
    # FSDP for models too large to replicate, e.g. "full_shard auto_wrap" (multi-GPU only).
    fsdp: str = ""
    # Distributed training launched by the train step through torch.distributed.run (DDP, or
    # FSDP with `fsdp`): worker processes per node (1: train in the step's own process;
    # "auto": one per visible GPU, 1 on CPU) and nodes. With nodes > 1 every node runs the
    # same step with the same `rdzv_endpoint` (host:port of node 0) and its own
    # PET_NODE_RANK (0 on the node whose models/NAME/ the pipeline reads), as under torchrun.
    processes: int | Literal["auto"] = 1
    nodes: int = 1
    rdzv_endpoint: str = ''
    group_by_length: bool = True
    save_total_limit: int = 2
    warm_start: str = ""  # path of a previous model whose head rows are copied for shared labels
    # image-classification: random resized crop (area share >= augment_min_scale) + h-flip
    augment: bool = True
    augment_min_scale: float = 0.5
    # BatchNorm layers keep the checkpoint's running statistics and affine weights even
    # where the rest trains (Keras' advice for fine-tuning EfficientNet on small data);
    # no effect under scratch, whose random body needs its BatchNorms to train.
    freeze_batchnorm: bool = False
    # causal-lm only
    prompt_template: str = "### Instruction:\n{prompt}\n\n### Response:\n"
    # Padding-free packing (one sequence per micro-batch, restarting position ids). "auto":
    # on CUDA only. On CPU the packed sequence's attention is quadratic in its whole length
    # (a block-diagonal mask over every row of the batch): SmolLM2 LoRA on SST-2 rows ran at
    # 241 packed vs 284 tokens/s length-grouped and padded at batch 8, 192 vs 288 at 32, and
    # 32 Alpaca rows packed took 19.5 GB (docs/training.md).
    packing: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        check_ranges(self, "train.")


def options_from_dict(values: dict) -> TrainOptions:
    """`dataclasses.asdict(TrainOptions)` back into TrainOptions (no pydantic: the launched
    workers run on machines that may lack it)."""
    return TrainOptions(**{**values, "lora": LoraOptions(**values.get("lora", {})),
                           "stages": [Stage(**s) for s in values.get("stages", [])]})
