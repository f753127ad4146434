"""Causal-LM training pieces: padding-free packing and perplexity (rows are rendered by
tunesmith.objectives.causal_lm.chat)."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import DataCollatorWithFlattening

from tunesmith.training.data import CausalPadCollator, pad_multiple

IGNORE = -100  # label value the cross-entropy loss skips


def causal_collator(tokenizer: Any, packing: bool | str):
    """Packing: one row of concatenated examples with restarting `position_ids` (no padding
    tokens, attention kept within each example). Otherwise right padding (to a multiple of 8
    on CUDA, `pad_multiple`). "auto": packing on CUDA only (TrainOptions.packing says why).
    """
    if packing == "auto":
        packing = torch.cuda.is_available()
    if packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return CausalPadCollator(pad_id=pad, multiple_of=pad_multiple())


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged run reports inf rather than overflowing."""
    return math.exp(loss) if loss < 50 else float("inf")


def supervised_loss(model: Any, inputs: dict[str, Any],
                    num_items_in_batch: Any = None) -> torch.Tensor:
    """The model's causal-LM loss (next-token cross-entropy over labels != IGNORE, summed
    and divided by `num_items_in_batch` when the Trainer passes it, else by their count),
    with the LM head run on the supervised positions only.

    transformers computes logits for every position: SmolLM2's head is 49152 x 576, ~20%
    of the model's FLOPs per token, and the fp32 logits of a packed batch of 32 SST-2 rows
    (1,632 tokens) are 320 MB, again for their gradient, while a label word supervises ~3
    positions of ~51. Equal to the model's loss within fp32 summation order
    (tests/test_causal_lm.py)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    body, head = lm.base_model, lm.get_output_embeddings()
    labels = inputs["labels"]
    hidden = body(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = head(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    return loss / count
