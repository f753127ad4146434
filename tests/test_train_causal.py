"""Causal-LM instruction tuning on a tiny GPT-2: response-only loss, packing, LoRA and full."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_rows, save_split

from tunesmith.training.causal_lm import causal_collator
from tunesmith.training.chat import render
from tunesmith.training.options import LoraOptions, TrainOptions
from tunesmith.training.run import TrainRequest, train_model

TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    """A GPT-2 with 2 layers of width 32 and a byte-level BPE trained on toy text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [t for t, _ in make_rows(300)] + [TEMPLATE, "positive negative review"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    config = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(out)
    return out


def pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rows = make_rows(n, seed)
    return [f"Is this review positive? {t}" for t, _ in rows], [
        "positive" if lab == "pos" else "negative" for _, lab in rows]


def render_split(tok, n: int, seed: int, out: Path, max_length: int = 64) -> None:
    """Rows as the tokenize step writes them (tunesmith.training.chat.render)."""
    cols: dict[str, list] = {"input_ids": [], "labels": [], "length": []}
    for prompt, response in zip(*pairs(n, seed), strict=True):
        r = render([{"role": "user", "content": prompt},
                    {"role": "assistant", "content": response}], tok, max_length, TEMPLATE)
        for key in cols:
            cols[key].append(r[key])
    save_split(out, cols)


@pytest.fixture(scope="module")
def tokenized(gpt2, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2)
    out = tmp_path_factory.mktemp("causal-tok")
    for split, n in (("train", 48), ("val", 16)):
        render_split(tok, n, len(split), out / split)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_packing_gives_the_same_loss_as_padding(arch, gpt2, tokenized, request, tmp_path):
    """Packed examples attend only to themselves: per-example logits equal the padded ones
    (the tolerance, 1e-4 on fp32 logits, is summation-order noise), on GPT-2 and on the real
    SmolLM2 architecture (Llama, its tokenizer and chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.training.data import TokenizedDataset

    base = gpt2 if arch == "gpt2" else request.getfixturevalue("tiny_llama")
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.pad_token or tok.eos_token
    if arch == "llama":
        render_split(tok, 6, 3, tmp_path / "llama")
        tokenized = tmp_path
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa").eval()
    ds = TokenizedDataset.load(tokenized / ("llama" if arch == "llama" else "train"))
    feats = [ds[i] for i in range(6)]
    packed = causal_collator(tok, packing=True)(feats)
    padded = causal_collator(tok, packing=False)(feats)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].shape[1] == sum(len(f["input_ids"]) for f in feats)  # no pad tokens
    with torch.no_grad():
        # With a KV cache transformers skips packed-sequence detection; Trainer turns it off.
        out_packed = model(**packed, use_cache=False)
        out_padded = model(**padded)
        leaky = model(**packed, use_cache=True).logits[0]
    # Summation order differs between the layouts; the per-logit check below is the tight one.
    assert out_packed.loss.item() == pytest.approx(out_padded.loss.item(), abs=5e-4)
    start, worst, worst_leaky = 0, 0.0, 0.0
    for row, f in enumerate(feats):
        n = len(f["input_ids"])
        ref = out_padded.logits[row, :n]
        worst = max(worst, (out_packed.logits[0, start:start + n] - ref).abs().max().item())
        worst_leaky = max(worst_leaky, (leaky[start:start + n] - ref).abs().max().item())
        start += n
    assert worst < 1e-4  # each example sees only itself, at positions 0..n-1
    assert worst_leaky > 1e-3  # the check can fail: attention across examples shows up


@pytest.mark.parametrize(("method", "packing"), [("lora", True), ("full", False)])
def test_causal_training_reports_perplexity(gpt2, tokenized, tmp_path, method, packing):
    opts = TrainOptions(method=method, epochs=2, lr=1e-2, batch_size=8, warmup_ratio=0.0,
                        packing=packing, lora=LoraOptions(r=4, alpha=8, dropout=0.0))
    summary = train_model(TrainRequest(
        base_model=str(gpt2), task="causal-lm", labels=[], tokenized_dir=tokenized,
        output_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", options=opts))
    assert summary.metric == "loss"
    assert summary.val_metrics["perplexity"] == pytest.approx(math.exp(summary.val_metrics["loss"]))
    curve = (tmp_path / "out" / "curve.csv").read_text().splitlines()
    first_loss = float(curve[1].split(",")[curve[0].split(",").index("loss")])
    # Response tokens are 2 words + eos: learnable fast, so validation loss drops below the start.
    assert summary.val_metrics["loss"] < first_loss
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["model_type"] == "gpt2" and saved["use_cache"] is True  # ready for generate()
    assert (tmp_path / "out" / "adapter").is_dir() == (method == "lora")
