"""Build the model a training method needs: which weights load, which train, LoRA wrapping."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig

from tunesmith.errors import EnvironmentProblem
from tunesmith.training.layers import (
    HEAD_NAMES,
    freeze_batchnorm,
    freeze_bottom,
    hold_frozen_batchnorm,
    keep_declared_frozen,
    set_trainable,
)
from tunesmith.training.options import TrainOptions

log = logging.getLogger(__name__)

# Attention projections per family: the usual LoRA placement (Hu et al. 2021), a bit wider
# than peft's q/v default because small encoders gain ~1 point from k and output too.
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "vit": ["q_proj", "k_proj", "v_proj"],
    "deit": ["q_proj", "k_proj", "v_proj"],
    # EfficientNet has no attention: its dense maps are the 1x1 convolutions, a Linear per
    # pixel (expansion, projection of every MBConv block, and the 320->1280 top conv), which
    # hold 93% of Lite0's body weights. Left out: the depthwise 3x3 convolutions (a kernel
    # per channel, rank <= 1 per channel already: nothing to factor) and the squeeze-excite
    # gates (neutral and frozen in Lite0).
    "efficientnet": ["expand_conv", "project_conv", "top_conv"],
}
# Image families without attention: LoRA has nothing to adapt there.
NO_ATTENTION = frozenset({"resnet", "convnext", "convnextv2", "regnet", "mobilenet_v2"})


def check_environment(opts: TrainOptions) -> None:
    """Fail before loading anything when the machine can't run the method."""
    if opts.method == "qlora":
        if not torch.cuda.is_available():
            raise EnvironmentProblem(
                "train.method=qlora needs a CUDA GPU (4-bit NF4 via bitsandbytes); "
                "this machine has none: use train.method=lora"
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise EnvironmentProblem(
                "train.method=qlora needs bitsandbytes: pip install 'tunesmith[qlora]'"
            ) from None


def lora_targets(model_type: str, configured: list[str]) -> list[str] | str:
    """Configured target modules, else the family default, else every linear layer."""
    if configured:
        return configured
    return LORA_TARGETS.get(model_type, "all-linear")


def label_kwargs(labels: list[str] | None) -> dict[str, Any]:
    """from_pretrained kwargs for a head sized to `labels` (none for a language model)."""
    if labels is None:
        return {}
    # id2label alone sizes the head: with num_labels too, a checkpoint whose config has 1,000
    # ImageNet labels warned "num_labels=2 ... incompatible to the id2label map" every run.
    return {"id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)}}


def load_pretrained(cls: Any, base: str, opts: TrainOptions, labels: list[str] | None = None,
                    attention: bool = True, **kw: Any) -> nn.Module:
    """`cls.from_pretrained(base)` as `opts.method` needs it: random weights for `scratch`,
    4-bit NF4 for `qlora`, a fresh head when `labels` differ from the checkpoint's."""
    kwargs: dict[str, Any] = {**label_kwargs(labels), **kw}
    if attention:
        # SDPA is the fused attention kernel in torch>=2; transformers falls back when
        # unsupported. CNNs (ResNet) have no attention and reject the argument.
        kwargs.setdefault("attn_implementation", "sdpa")
    if opts.method == "scratch":
        attn = kwargs.pop("attn_implementation", None)
        config = AutoConfig.from_pretrained(base, **kwargs)
        return cls.from_config(config, **({"attn_implementation": attn} if attn else {}))
    if opts.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
    # A checkpoint trained with other labels has a differently shaped head: replace it.
    # transformers logs a LOAD REPORT table (a dozen lines, `classifier.weight | MISSING`) as
    # a warning on every such load; the loading info it is made of becomes one line instead.
    with quiet_load_report():
        model, info = cls.from_pretrained(base, ignore_mismatched_sizes=labels is not None,
                                          output_loading_info=True, **kwargs)
    if (note := load_note(info, labels)) is not None:
        log.info(note)
    return model


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def quiet_load_report() -> Iterator[None]:
    """Drop the LOAD REPORT record of transformers.modeling_utils' logger for one load
    (load_note says what it held); its other warnings pass. A filter, not a level: at
    WARNING or above that logger also runs a tensor-parallel plan check that warns
    "layers were not sharded" on every CPU load (transformers 5 modeling_utils)."""
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.modeling_utils")
    logger.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        logger.removeFilter(_not_a_load_report)


def _is_head(key: str) -> bool:
    return any(part in HEAD_NAMES for part in key.split("."))


def _head_module(key: str) -> str:
    """`bert.pooler.dense.weight` -> `bert.pooler`: the path up to its head-named part."""
    parts = key.split(".")
    return ".".join(parts[:next(i for i, p in enumerate(parts) if p in HEAD_NAMES) + 1])


def load_note(info: dict[str, Any], labels: list[str] | None) -> str | None:
    """One line for what the LOAD REPORT said: the new head (freshly initialised because the
    checkpoint has none, or another label count), and, named, any other weight that did not
    load (that one is a real problem: a warning). None when everything loaded."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(k for k, *_ in info.get("mismatched_keys") or ())
    fresh = sorted({_head_module(k) for k in [*missing, *mismatched] if _is_head(k)})
    body = [k for k in [*missing, *mismatched] if not _is_head(k)]
    unused = len(info.get("unexpected_keys") or ())
    if body:
        shown = ", ".join(body[:4]) + (f" and {len(body) - 4} more" if len(body) > 4 else "")
        log.warning("weights not in the checkpoint, initialised at random: %s", shown)
    if not fresh and not unused:
        return None
    parts = []
    if fresh:
        parts.append(f"new head: {', '.join(fresh)}"
                     + (f", {len(labels)} labels" if labels is not None else ""))
    if unused:
        parts.append(f"{unused} checkpoint tensors not used by this model")
    return "; ".join(parts)


def apply_method(model: nn.Module, opts: TrainOptions, labelled: bool = True,
                 peft_task: str | None = None) -> nn.Module:
    """Freeze / wrap `model` for `opts.method`; returns the model to train.

    Whatever the method, parameters the config declares frozen stay frozen and a frozen
    BatchNorm keeps its running statistics (tunesmith.training.layers).
    `labelled`: the model has a classification head (trained fully under LoRA too);
    `peft_task`: peft's TaskType name for the wrapper (None: a plain PeftModel).
    """
    method = opts.method
    if method in ("full", "scratch"):
        set_trainable(model, "all")
    elif method == "freeze":
        freeze_bottom(model, opts.freeze_layers)
    elif method == "head_only":
        set_trainable(model, 0)
    elif method == "staged":
        # The StagedUnfreezing callback sets the first stage at the first epoch; all weights
        # stay in the optimizer so later stages only flip requires_grad.
        set_trainable(model, "all")
    elif method in ("lora", "qlora"):
        model = wrap_lora(model, opts, labelled, peft_task)
    else:  # pragma: no cover - TrainOptions.method is a Literal checked by the config
        raise ValueError(f"unknown method {method}")
    keep_declared_frozen(model)
    if opts.freeze_batchnorm and method != "scratch":  # a random body needs its BatchNorms
        freeze_batchnorm(model)
    hold_frozen_batchnorm(model)
    if opts.gradient_checkpointing is True:  # "auto" is resolved by train_model first
        # transformers 5 calls it activation checkpointing; non-reentrant copes with frozen inputs.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def wrap_lora(model: nn.Module, opts: TrainOptions, labelled: bool,
              peft_task: str | None) -> nn.Module:
    """peft LoRA (after k-bit preparation for QLoRA); the head trains fully and is saved."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if opts.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=opts.gradient_checkpointing is True
        )
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    head = [h for h in HEAD_NAMES if h in present] if labelled else []
    model_type = model.config.model_type
    if model_type in NO_ATTENTION and not opts.lora.target_modules:
        raise EnvironmentProblem(
            f"train.method=lora: {model_type} has no attention layers to adapt; use an attention "
            "model (vit, deit, ...), set train.lora.target_modules, or train.method=freeze"
        )
    config = LoraConfig(
        # None (images): a plain PeftModel; SEQ_CLS's forward expects input_ids.
        task_type=getattr(TaskType, peft_task) if peft_task else None,
        r=opts.lora.r,
        lora_alpha=opts.lora.alpha,
        lora_dropout=opts.lora.dropout,
        target_modules=lora_targets(model.config.model_type, opts.lora.target_modules),
        modules_to_save=head or None,
        # GPT-2 stores its projections as Conv1D (weight transposed).
        fan_in_fan_out=model.config.model_type == "gpt2",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` alias in
        # PeftModel.__init__: a FutureWarning on every LoRA run that the user can do nothing
        # about (tests/test_train.py checks LoRA warns nothing).
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        return get_peft_model(model, config)
