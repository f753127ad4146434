"""Causal-LM evaluation: response-only loss, perplexity, greedy generations, exact match.

Rows are conversations (`messages`), rendered exactly as training renders them
(tunesmith.objectives.causal_lm.chat.render: the chat template, or `train.prompt_template` when the
tokenizer has none), so the test perplexity is comparable with the training curve's eval loss
and the same for the fine-tuned model, the untuned base and the champion. Generation feeds
`chat.prompt_ids`: the prompt serving renders.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tunesmith.errors import EnvironmentProblem

MAX_NEW_TOKENS = 64
# References that look like labels ("positive", "4", "Paris"): at most this many distinct
# values, each at most this long. Then every test row is generated and exact match is scored.
LABEL_VALUES, LABEL_CHARS = 20, 32
_PUNCT = re.compile(r"[\s.!?,;:'\"]+$")


def load_lm(path: Path | str | None) -> tuple[Any, Any]:
    """A causal LM (eval mode) and its tokenizer (pad = eos when it has no pad token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path is None or not (Path(path) / "config.json").is_file():
        raise EnvironmentProblem(f"{path}: no trained model here; run the train step first")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                 trust_remote_code=False)
    return model.eval(), tokenizer


def lm_loss(model: Any, tokenizer: Any, conversations: list[list[dict]], max_length: int,
            template: str | None, batch_size: int = 16) -> dict[str, float]:
    """Mean cross-entropy over the supervised (assistant) tokens, summed then divided once,
    so long answers weigh more: the training loss's definition."""
    import torch

    from tunesmith.objectives.causal_lm.chat import IGNORE, render
    from tunesmith.objectives.causal_lm.training import perplexity

    rows = [render(m, tokenizer, max_length, template) for m in conversations]
    rows = [r for r in rows if r["n_supervised"]]  # as tokenize: nothing to score otherwise
    rows.sort(key=lambda r: r["length"])  # batches of similar length: less padding
    body, head = model.base_model, model.get_output_embeddings()
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(r["length"] for r in chunk)
            ids = torch.tensor([r["input_ids"] + [pad] * (width - r["length"]) for r in chunk])
            target = torch.tensor([r["labels"] + [IGNORE] * (width - r["length"]) for r in chunk])
            mask = torch.tensor([[1] * r["length"] + [0] * (width - r["length"]) for r in chunk])
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            # Token t predicts token t+1; only supervised positions need the LM head (a
            # label word is ~3 of ~100 positions, and SmolLM2's head is 49152 wide).
            keep = target[:, 1:] != IGNORE
            logits = head(hidden[:, :-1][keep]).float()
            loss = torch.nn.functional.cross_entropy(logits, target[:, 1:][keep],
                                                     reduction="sum")
            total += float(loss)
            count += int(keep.sum())
    mean = total / max(count, 1)
    return {"eval_loss": mean, "perplexity": perplexity(mean), "n_tokens": float(count)}


def generate(model: Any, tokenizer: Any, prompts: list[list[dict]], template: str | None,
             max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 8) -> list[str]:
    """Greedy answers to conversations that end before an assistant turn (left-padded
    batches: generation continues from the right end of each row)."""
    import torch

    from tunesmith.objectives.causal_lm.chat import prompt_ids

    encoded = [prompt_ids(p, tokenizer, template) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding
    out: list[str] = [""] * len(encoded)
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows])
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                 for i in rows])
            new = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad)[:, width:]
            for i, tokens in zip(rows, new, strict=True):
                out[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return out


def label_like(references: list[str]) -> bool:
    """Whether the references are short labels, so exact match means something."""
    distinct = set(references)
    return 0 < len(distinct) <= LABEL_VALUES and all(len(r) <= LABEL_CHARS for r in distinct)


def normalise(answer: str) -> str:
    """Case, surrounding space and trailing punctuation do not count against an answer."""
    return _PUNCT.sub("", answer.strip().lower())


def exact_match(generated: list[str], references: list[str]) -> float:
    hits = sum(normalise(g) == normalise(r) for g, r in zip(generated, references, strict=True))
    return hits / max(len(references), 1)


def samples_markdown(rows: list[dict[str, str]]) -> str:
    """The generations table of the eval report, reference beside each answer."""
    lines = ["# Generated answers (greedy)", "",
             "| prompt | reference | fine-tuned | untuned base |", "| --- | --- | --- | --- |"]
    for row in rows:
        cells = [row.get(k, "") for k in ("prompt", "reference", "generated", "base")]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ")[:200]
                                       for c in cells) + " |")
    return "\n".join(lines) + "\n"
