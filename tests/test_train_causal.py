"""Causal-LM instruction tuning on a tiny GPT-2: response-only loss, packing, LoRA and full."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_rows, save_split

from tunesmith.objectives.causal_lm.chat import render
from tunesmith.objectives.causal_lm.training import causal_collator
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
    """Rows as the tokenize step writes them (tunesmith.objectives.causal_lm.chat.render)."""
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


def test_token_budget_micro_batches_cover_every_row_once_within_the_budget():
    """Every row once per epoch, each micro-batch within the budget (padded: rows x widest;
    packed: the sum) and `max_rows`, a pure function of (seed, epoch) that changes by epoch."""
    import random

    from tunesmith.training.data import TokenBudgetBatchSampler

    lengths = [random.Random(i).randint(20, 480) for i in range(300)]
    for packed in (False, True):
        sampler = TokenBudgetBatchSampler(lengths, budget=1024, max_rows=32, seed=7,
                                          packed=packed)
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
            for b in batches:
                cost = sum(lengths[i] for i in b) if packed else \
                    len(b) * max(lengths[i] for i in b)
                assert len(b) <= 32 and (cost <= 1024 or len(b) == 1)
            epochs.append(batches)
        assert epochs[0] != epochs[1]
        sampler.set_epoch(0)
        assert list(sampler) == epochs[0]  # resume replays the same micro-batches
    short = TokenBudgetBatchSampler([40] * 64, budget=1024, max_rows=16, seed=0)
    assert [len(b) for b in short] == [16] * 4  # rows cap: short rows keep batch_size rows
    evaluation = TokenBudgetBatchSampler(lengths, 1024, 64, seed=0, shuffle=False)
    widths = [max(lengths[i] for i in b) for b in evaluation]
    assert widths == sorted(widths, reverse=True)  # longest first


def test_training_under_a_token_budget_never_runs_a_bigger_micro_batch(gpt2, tmp_path):
    """`train.batch_tokens`: every forward pass (train and eval) holds at most the budget in
    padded tokens, and about `batch_size` rows still make one optimizer step."""
    from transformers import AutoTokenizer, TrainerCallback

    tok = AutoTokenizer.from_pretrained(gpt2)
    tokenized = tmp_path / "tok"
    for split, n in (("train", 64), ("val", 16)):
        render_split(tok, n, len(split), tokenized / split, max_length=64)
    shapes: list[tuple[int, int]] = []

    class Shapes(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            # the embeddings: the task's loss runs the body, not the model's own forward
            model.get_input_embeddings().register_forward_pre_hook(
                lambda m, a: shapes.append(tuple(a[0].shape)))

    opts = TrainOptions(method="full", epochs=1, lr=1e-3, batch_size=16, batch_tokens=160,
                        packing=False, early_stopping_patience=0)
    summary = train_model(TrainRequest(
        base_model=str(gpt2), task="causal-lm", labels=[], tokenized_dir=tokenized,
        output_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", options=opts,
        callbacks=[Shapes()]))
    assert shapes and max(r * w for r, w in shapes) <= 160  # rows of 30-60 tokens: 2-5 a batch
    assert max(r for r, _ in shapes) < 16
    assert summary.steps in range(3, 7)  # 64 rows at ~16 rows a step, not 64 / 3 micro-batches
    assert summary.batch_tokens == 160 and summary.gradient_checkpointing is False

    tight = TrainOptions(method="full", max_steps=1, lr=1e-3, batch_size=16, batch_tokens=16,
                         packing=False, early_stopping_patience=0)
    alone = train_model(TrainRequest(
        base_model=str(gpt2), task="causal-lm", labels=[], tokenized_dir=tokenized,
        output_dir=tmp_path / "out2", checkpoint_dir=tmp_path / "ckpt2", options=tight))
    assert alone.gradient_checkpointing is True  # "auto": a row alone breaks a 16-token budget
