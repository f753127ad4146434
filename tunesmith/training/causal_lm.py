"""Causal-LM instruction tuning: prompt template, response-only loss, padding-free packing."""

from __future__ import annotations

import math
from typing import Any

from transformers import DataCollatorWithFlattening

from tunesmith.training.data import CausalPadCollator

IGNORE = -100  # label value the cross-entropy loss skips


def tokenize_causal(
    prompts: list[str],
    responses: list[str],
    tokenizer: Any,
    template: str,
    max_length: int,
) -> dict[str, list]:
    """Token ids for `template.format(prompt=...) + response + eos`, loss on the response only.

    Returns `input_ids`, `labels` (-100 on prompt tokens), `length`, and `full_length`
    (tokens before truncation, for the tokenize report), one entry per row.
    Prompt and response are tokenized separately so the boundary is exact; templates end
    in a newline, so this matches joint tokenization for BPE/WordPiece vocabularies.
    Over-long rows lose the start of the prompt first (the instruction's tail and the
    response matter most), keeping at least half of `max_length` for the response.
    """
    if "{prompt}" not in template:
        raise ValueError("train.prompt_template must contain {prompt}")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = tokenizer([template.format(prompt=p) for p in prompts])["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    out: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "full_length": []}
    for p_ids, r_ids in zip(prompt_ids, response_ids, strict=True):
        out["full_length"].append(len(p_ids) + len(r_ids) + len(eos))
        r_ids = (r_ids + eos)[: max(1, max_length - min(len(p_ids), max_length // 2))]
        p_ids = p_ids[-(max_length - len(r_ids)) :] if max_length > len(r_ids) else []
        ids = p_ids + r_ids
        out["input_ids"].append(ids)
        out["labels"].append([IGNORE] * len(p_ids) + r_ids)
        out["length"].append(len(ids))
    return out


def causal_collator(tokenizer: Any, packing: bool):
    """Packing: one row of concatenated examples with restarting `position_ids` (no padding
    tokens, attention kept within each example). Otherwise right padding to a multiple of 8.
    """
    if packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return CausalPadCollator(pad_id=pad)


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged run reports inf rather than overflowing."""
    return math.exp(loss) if loss < 50 else float("inf")
