"""The GPU suite: tunesmith's training core vs a plain HF Trainer script, per model and method.

    python bench/gpu_suite.py [--cases bert-full gpt2-lora ...] [--steps 30] [--out DIR]
    python bench/gpu_suite.py --smoke      # tiny sizes on CPU, seconds (qlora skipped)

Every model is built from a config (no download) with a synthetic word-level tokenizer of
its vocabulary size, and trains on synthetic token rows written in the tokenize step's
on-disk format (pyarrow only: the accelerator machine has no `datasets`). Each case runs
twice in its own process: `tunesmith` is `train_model` (what `tunesmith step train` runs:
bf16 autocast, fused AdamW, token-budget micro-batches, packing on CUDA), `plain` the script
a user writes (Trainer + AutoModel + the padding collator, bf16=True, the same batch,
learning rate and steps; QLoRA through BitsAndBytesConfig + peft). One JSON line per run:

- tokens_per_s: real (non-pad) tokens over the summed optimizer-step time (warm-up steps
  left out);
- step_s: the median optimizer step;
- flops_per_token: 6 N + 12 L d T (N non-embedding parameters, L layers, d width, T the
  mean row length: the Kaplan/Chinchilla training convention, used for every method so
  that MFU compares across them; LoRA skips the weight gradients, so its real work is
  nearer 4 N + 12 L d T);
- mfu: tokens_per_s x flops_per_token / the device's dense bf16 peak (989 TFLOP/s for an
  H100 or H200 SXM, read from the device name; CPU: none);
- peak_mem_mb: torch.cuda.max_memory_allocated (CPU: peak RSS); trainable parameters.

Cases (`--cases`; default all that fit the device): BERT-base sequence classification at seq
128 (full, lora, qlora), GPT-2-small causal LM at seq 1024, packed (full, lora, qlora), a
1B-class Llama (16 layers, width 2048) at seq 2048 (lora, qlora), and `ddp`: GPT-2-small full
with `train.processes=auto` through the pipeline's own launcher (one worker per GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# peak bf16 dense TFLOP/s by device name (SXM parts; the PCIe H100 is lower)
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass(frozen=True)
class Arch:
    task: str  # tunesmith task type
    family: str  # bert | gpt2 | llama
    layers: int
    width: int
    heads: int
    vocab: int
    seq: int
    batch: int


FULL = {
    "bert": Arch("text-classification", "bert", 12, 768, 12, 30522, 128, 32),
    "gpt2": Arch("causal-lm", "gpt2", 12, 768, 12, 50257, 1024, 8),
    "llama1b": Arch("causal-lm", "llama", 16, 2048, 32, 32000, 2048, 4),
}
SMOKE = {
    "bert": Arch("text-classification", "bert", 2, 32, 2, 300, 32, 4),
    "gpt2": Arch("causal-lm", "gpt2", 2, 32, 2, 300, 64, 4),
    "llama1b": Arch("causal-lm", "llama", 2, 64, 4, 300, 64, 2),
}
CASES = {  # name -> (arch, method)
    "bert-full": ("bert", "full"), "bert-lora": ("bert", "lora"), "bert-qlora": ("bert", "qlora"),
    "gpt2-full": ("gpt2", "full"), "gpt2-lora": ("gpt2", "lora"), "gpt2-qlora": ("gpt2", "qlora"),
    "llama1b-lora": ("llama1b", "lora"), "llama1b-qlora": ("llama1b", "qlora"),
    "ddp": ("gpt2", "full"),
}
LR = {"full": 5e-5, "lora": 5e-4, "qlora": 5e-4}
WARMUP_STEPS = 3  # left out of tokens/s: CUDA context, autotuning, allocator growth


def build_base(arch: Arch, out: Path) -> Path:
    """A model of `arch` with random weights and a word-level tokenizer of its vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if (out / "config.json").is_file():
        return out
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|eos|>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(arch.vocab - 6)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kw = ({"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
           "mask_token": "[MASK]"} if arch.family == "bert" else
          {"pad_token": "<|eos|>", "eos_token": "<|eos|>", "bos_token": "<|eos|>"})
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                   model_max_length=arch.seq, **kw)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    model_for(arch, fast).save_pretrained(out)
    return out


def model_for(arch: Arch, tok):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if arch.family == "bert":
        return BertForSequenceClassification(BertConfig(
            vocab_size=arch.vocab, hidden_size=arch.width, num_hidden_layers=arch.layers,
            num_attention_heads=arch.heads, intermediate_size=4 * arch.width,
            max_position_embeddings=max(512, arch.seq), num_labels=2,
            pad_token_id=tok.pad_token_id))
    if arch.family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=arch.vocab, n_positions=arch.seq, n_embd=arch.width, n_layer=arch.layers,
            n_head=arch.heads, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=arch.vocab, hidden_size=arch.width, intermediate_size=int(2.75 * arch.width),
        num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
        num_key_value_heads=max(1, arch.heads // 4), max_position_embeddings=arch.seq,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def synthetic_rows(arch: Arch, n: int, seed: int = 0) -> list[dict]:
    """Rows of random ids: classification rows of seq/2..seq tokens with a label; causal rows
    of seq/8..seq tokens, the loss on their second half (an answer after a prompt)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(arch.seq // (2 if arch.task != "causal-lm" else 8), arch.seq)
        ids = [rng.randrange(6, arch.vocab) for _ in range(length)]
        if arch.task == "causal-lm":
            cut = length // 2
            labels: int | list[int] = [-100] * cut + ids[cut:]
        else:
            labels = rng.randrange(2)
        rows.append({"input_ids": ids, "labels": labels, "length": length})
    return rows


def write_split(rows: list[dict], out: Path) -> None:
    """One split as the tokenize step writes it (data-00000-of-00001.arrow), pyarrow only."""
    import pyarrow as pa

    out.mkdir(parents=True, exist_ok=True)
    nested = isinstance(rows[0]["labels"], list)
    table = pa.table({
        "input_ids": pa.array([r["input_ids"] for r in rows], type=pa.list_(pa.int32())),
        "labels": pa.array([r["labels"] for r in rows],
                           type=pa.list_(pa.int64()) if nested else pa.int64()),
        "length": pa.array([r["length"] for r in rows], type=pa.int32())})
    with pa.OSFile(str(out / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def tokenized(arch: Arch, n_rows: int, work: Path) -> Path:
    out = work / f"tok-{arch.family}"
    if not (out / "meta.json").is_file():
        rows = synthetic_rows(arch, n_rows)
        write_split(rows, out / "train")
        write_split(rows[: max(8, n_rows // 16)], out / "val")
        labels = [] if arch.task == "causal-lm" else ["a", "b"]
        (out / "meta.json").write_text(json.dumps({"task": arch.task, "labels": labels}))
    return out


def step_clock():
    """A TrainerCallback with each optimizer step's wall time (CUDA-synchronised)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def _sync(self) -> None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_step_begin(self, args, state, control, **kwargs):
            self._sync()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self._sync()
            self.times.append(time.perf_counter() - self._t)

    return StepClock()


def run_tunesmith(arch: Arch, method: str, base: Path, data: Path, steps: int, work: Path,
                  processes: int | str = 1) -> dict:
    from tunesmith.training.options import LoraOptions, TrainOptions
    from tunesmith.training.run import TrainRequest, train_model

    clock = step_clock()
    opts = TrainOptions(method=method, max_steps=steps, lr=LR[method], batch_size=arch.batch,
                        early_stopping_patience=0, eval_every_steps=10**6, save_total_limit=1,
                        lora=LoraOptions(r=16, alpha=32, dropout=0.0), processes=processes,
                        metric_for_best="loss")
    req = TrainRequest(base_model=str(base), task=arch.task,
                       labels=[] if arch.task == "causal-lm" else ["a", "b"],
                       tokenized_dir=data, output_dir=work / "out", checkpoint_dir=work / "ckpt",
                       options=opts, callbacks=[] if processes != 1 else [clock])
    if processes != 1:
        from tunesmith.training.launch import launch

        started = time.perf_counter()
        summary = launch(req)
        wall = time.perf_counter() - started
        return {"step_times": [], "wall_s": wall, "trainable": summary.trainable_params,
                "world_size": summary.world_size, "precision": summary.precision}
    summary = train_model(req)
    return {"step_times": clock.times, "trainable": summary.trainable_params,
            "world_size": summary.world_size, "precision": summary.precision}


def run_plain(arch: Arch, method: str, base: Path, data: Path, steps: int, work: Path) -> dict:
    """What a user writes: AutoModel + Trainer + the padding collator, bf16 on CUDA."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunesmith.training.data import TokenizedDataset

    tok = AutoTokenizer.from_pretrained(base)
    cls = AutoModelForCausalLM if arch.task == "causal-lm" else AutoModelForSequenceClassification
    kw: dict = {}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = cls.from_pretrained(base, **kw)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if method == "qlora":
            model = prepare_model_for_kbit_training(model)
        from tunesmith.training.methods import lora_targets

        model = get_peft_model(model, LoraConfig(  # the same adapters as tunesmith's
            task_type="CAUSAL_LM" if arch.task == "causal-lm" else "SEQ_CLS", r=16,
            lora_alpha=32, lora_dropout=0.0,
            target_modules=lora_targets(model.config.model_type, []),
            fan_in_fan_out=arch.family == "gpt2"))
    ds = TokenizedDataset.load(data / "train")
    collator = DataCollatorForSeq2Seq(tok, padding=True) if arch.task == "causal-lm" else \
        DataCollatorWithPadding(tok)
    clock = step_clock()
    cuda = torch.cuda.is_available()
    trainer = Trainer(model=model, train_dataset=ds, data_collator=collator, callbacks=[clock],
                      args=TrainingArguments(
                          output_dir=str(work / "plain"), max_steps=steps,
                          per_device_train_batch_size=arch.batch, learning_rate=LR[method],
                          bf16=cuda, logging_steps=10**6, save_strategy="no", report_to="none",
                          use_cpu=not cuda, dataloader_num_workers=0,
                          remove_unused_columns=False))
    trainer.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"step_times": clock.times, "trainable": trainable, "world_size": 1,
            "precision": "bf16" if cuda else "fp32"}


def flops_per_token(arch: Arch, mean_len: float) -> float:
    """6 N + 12 L d T, N the non-embedding parameters (12 L d^2 for these blocks)."""
    blocks = arch.layers * (4 * arch.width ** 2 + 2 * arch.width * (
        int(2.75 * arch.width) * 3 // 2 if arch.family == "llama" else 4 * arch.width))
    return 6 * blocks + 12 * arch.layers * arch.width * mean_len


def device() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    return name, next((v for k, v in PEAKS.items() if k in name), None)


def worker(args) -> None:
    import torch

    arch_name, method = CASES[args.case]
    arch = (SMOKE if args.smoke else FULL)[arch_name]
    work = Path(args.work)
    base = build_base(arch, work / f"base-{arch.family}")
    rows = max(arch.batch * (args.steps + 2) * 2, 64)
    data = tokenized(arch, rows, work)
    run_dir = work / f"{args.case}-{args.side}"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if args.side == "plain":
        result = run_plain(arch, method, base, data, args.steps, run_dir)
    else:
        result = run_tunesmith(arch, method, base, data, args.steps, run_dir,
                               processes="auto" if args.case == "ddp" else 1)
    lengths = [r["length"] for r in synthetic_rows(arch, rows)]
    mean_len = statistics.mean(lengths)
    timed = result["step_times"][WARMUP_STEPS:] or result["step_times"]
    name, peak = device()
    world = result["world_size"]
    per_step = arch.batch * world * mean_len  # real tokens a step, on average
    if timed:
        tokens_s = per_step / statistics.mean(timed)
        step_s = statistics.median(timed)
    else:  # launched workers: the whole run, start-up included (a lower bound)
        tokens_s = per_step * args.steps / result["wall_s"]
        step_s = result["wall_s"] / args.steps
    fpt = flops_per_token(arch, mean_len)
    mem = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else
           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        "case": args.case, "side": args.side, "device": name, "method": method,
        "seq": arch.seq, "batch": arch.batch, "world_size": world,
        "precision": result["precision"], "tokens_per_s": round(tokens_s, 1),
        "step_s": round(step_s, 4), "flops_per_token": fpt,
        "mfu": round(tokens_s * fpt / peak, 4) if peak else None,
        "peak_mem_mb": round(mem, 1), "trainable_params": result["trainable"],
        "steps": args.steps}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sides", nargs="+", choices=("tunesmith", "plain"),
                        default=["tunesmith", "plain"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU, qlora skipped")
    parser.add_argument("--out", help="write results.jsonl here too")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return worker(args)
    import torch

    cuda = torch.cuda.is_available()
    cases = args.cases or [c for c in CASES if cuda or "qlora" not in c]
    if args.smoke:
        cases = [c for c in cases if "qlora" not in c]
        args.steps = min(args.steps, 5)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for side in args.sides:
                if case == "ddp" and side == "plain":
                    continue  # the launcher is tunesmith's; its plain baseline is gpt2-full
                if args.smoke:  # in this process: seconds, not an interpreter start each
                    import contextlib
                    import io

                    captured = io.StringIO()
                    with contextlib.redirect_stdout(captured):
                        worker(argparse.Namespace(case=case, side=side, work=tmp,
                                                  steps=args.steps, smoke=True))
                    row = json.loads(captured.getvalue().strip().splitlines()[-1])
                    results.append(row)
                    print(json.dumps(row), flush=True)
                    continue
                cmd = [sys.executable, __file__, "--case", case, "--side", side, "--work", tmp,
                       "--steps", str(args.steps), *(["--smoke"] if args.smoke else [])]
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=args.timeout,
                                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
                    line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else None
                    row = json.loads(line) if line else {
                        "case": case, "side": side, "error": out.stderr.strip()[-600:]}
                except subprocess.TimeoutExpired:
                    row = {"case": case, "side": side, "error": f"timeout {args.timeout}s"}
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in results))
    if any("error" in r for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
