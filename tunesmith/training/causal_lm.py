"""Causal-LM training pieces: padding-free packing and perplexity (rows are rendered by
tunesmith.training.chat)."""

from __future__ import annotations

import math
from typing import Any

from transformers import DataCollatorWithFlattening

from tunesmith.training.data import CausalPadCollator

IGNORE = -100  # label value the cross-entropy loss skips


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
