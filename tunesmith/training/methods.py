"""Build the model a training method needs: which weights load, which train, LoRA wrapping."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from tunesmith.errors import EnvironmentProblem
from tunesmith.training.layers import HEAD_NAMES, freeze_bottom, set_trainable
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


def _auto_cls(task: str):
    if task == "image-classification":
        return AutoModelForImageClassification
    return AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification


def _model_kwargs(task: str, labels: list[str]) -> dict[str, Any]:
    # SDPA is the fused attention kernel in torch>=2; transformers falls back when unsupported.
    # CNNs (ResNet) have no attention and reject the argument; ViT picks SDPA by default.
    kwargs: dict[str, Any] = (
        {} if task == "image-classification" else {"attn_implementation": "sdpa"})
    if task != "causal-lm":
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    return kwargs


def load_base(base: str, task: str, labels: list[str], opts: TrainOptions) -> nn.Module:
    """Pretrained weights (random for `scratch`), with a fresh head sized for `labels`."""
    cls = _auto_cls(task)
    kwargs = _model_kwargs(task, labels)
    if task == "image-classification":
        return _load_image_model(base, labels, opts, kwargs)
    if opts.method == "scratch":
        attn = kwargs.pop("attn_implementation")
        return cls.from_config(AutoConfig.from_pretrained(base, **kwargs), attn_implementation=attn)
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
    return cls.from_pretrained(base, ignore_mismatched_sizes=task != "causal-lm", **kwargs)


def _load_image_model(base: str, labels: list[str], opts: TrainOptions,
                      kwargs: dict[str, Any]) -> nn.Module:
    """Pretrained body (random for `scratch`); a new Xavier head when the labels differ.

    A checkpoint whose id2label already equals `labels` keeps its trained head (retraining
    one of our own models); any other label set gets the recipe's fresh head.
    """
    from tunesmith.training.images import checkpoint_labels, init_head_xavier

    if opts.method in ("qlora",):
        raise EnvironmentProblem("train.method=qlora: not supported for image-classification; "
                                 "use lora (attention models) or freeze/head_only")
    same = checkpoint_labels(AutoConfig.from_pretrained(base)) == list(labels)
    if opts.method == "scratch":
        model = AutoModelForImageClassification.from_config(
            AutoConfig.from_pretrained(base, **kwargs))
    else:
        model = AutoModelForImageClassification.from_pretrained(
            base, ignore_mismatched_sizes=True, **kwargs)
    if opts.method == "scratch" or not same:
        names = init_head_xavier(model)
        log.info("image head %s: Xavier-uniform weights, zero bias", names)
    return model


def apply_method(model: nn.Module, task: str, opts: TrainOptions) -> nn.Module:
    """Freeze / wrap `model` for `opts.method`; returns the model to train."""
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
        model = wrap_lora(model, task, opts)
    else:  # pragma: no cover - TrainOptions.method is a Literal checked by the config
        raise ValueError(f"unknown method {method}")
    if opts.gradient_checkpointing:
        # transformers 5 calls it activation checkpointing; non-reentrant copes with frozen inputs.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def wrap_lora(model: nn.Module, task: str, opts: TrainOptions) -> nn.Module:
    """peft LoRA (after k-bit preparation for QLoRA); the head trains fully and is saved."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if opts.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=opts.gradient_checkpointing
        )
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    head = [] if task == "causal-lm" else [h for h in HEAD_NAMES if h in present]
    model_type = model.config.model_type
    if (task == "image-classification" and model_type in NO_ATTENTION
            and not opts.lora.target_modules):
        raise EnvironmentProblem(
            f"train.method=lora: {model_type} has no attention layers to adapt; use an attention "
            "model (vit, deit, ...), set train.lora.target_modules, or train.method=freeze"
        )
    task_types = {"causal-lm": TaskType.CAUSAL_LM, "text-classification": TaskType.SEQ_CLS}
    config = LoraConfig(
        # Images: a plain PeftModel (SEQ_CLS's forward expects input_ids, not pixel_values).
        task_type=task_types.get(task),
        r=opts.lora.r,
        lora_alpha=opts.lora.alpha,
        lora_dropout=opts.lora.dropout,
        target_modules=lora_targets(model.config.model_type, opts.lora.target_modules),
        modules_to_save=head or None,
        # GPT-2 stores its projections as Conv1D (weight transposed).
        fan_in_fan_out=model.config.model_type == "gpt2",
    )
    model = get_peft_model(model, config)
    return model
