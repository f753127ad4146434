"""Causal-LM evaluation: response-only loss, perplexity and greedy samples.

The loss masks prompt tokens exactly as training does (`tokenize_causal`), so the test
perplexity is comparable with the training curve's eval loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tunesmith.errors import EnvironmentProblem

MAX_NEW_TOKENS = 64


def load_lm(path: Path | None) -> tuple[Any, Any]:
    """A causal LM and its tokenizer (pad = eos when the tokenizer has no pad token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path is None or not (path / "config.json").is_file():
        raise EnvironmentProblem(f"{path}: no trained model here; run the train step first")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


def lm_loss(
    model: Any, tokenizer: Any, test: pd.DataFrame, template: str, max_length: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Mean cross-entropy over response tokens (prompt tokens masked as in training)."""
    import torch

    from tunesmith.training.causal_lm import IGNORE, perplexity, tokenize_causal

    enc = tokenize_causal(test["prompt"].astype(str).tolist(),
                          test["response"].astype(str).tolist(), tokenizer, template, max_length)
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(enc["input_ids"]), batch_size):
            ids = enc["input_ids"][start:start + batch_size]
            labels = enc["labels"][start:start + batch_size]
            width = max(map(len, ids))
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            target = torch.tensor([y + [IGNORE] * (width - len(y)) for y in labels])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            # Token t predicts token t+1; sum, then divide once, so long answers weigh more.
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1),
                ignore_index=IGNORE, reduction="sum",
            )
            total += float(loss)
            count += int((target[:, 1:] != IGNORE).sum())
    mean = total / max(count, 1)
    return {"eval_loss": mean, "perplexity": perplexity(mean), "n_tokens": float(count)}


def generate_samples(
    model: Any, tokenizer: Any, rows: pd.DataFrame, template: str, max_length: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> pd.DataFrame:
    """Greedy generations for a few test prompts, beside the reference responses."""
    import torch

    generated = []
    with torch.inference_mode():
        for prompt in rows["prompt"].astype(str):
            enc = tokenizer(template.format(prompt=prompt), truncation=True,
                            max_length=max_length, return_tensors="pt")
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            new = ids[0, enc["input_ids"].shape[1]:]
            generated.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return pd.DataFrame({"prompt": rows["prompt"].astype(str).tolist(),
                         "reference": rows["response"].astype(str).tolist(),
                         "generated": generated})


def samples_markdown(samples: pd.DataFrame) -> str:
    lines = ["# Generated samples (greedy)", ""]
    for i, row in enumerate(samples.itertuples(), 1):
        lines += [f"## {i}", "", f"**prompt**: {row.prompt}", "",
                  f"**reference**: {row.reference}", "", f"**generated**: {row.generated}", ""]
    return "\n".join(lines)
