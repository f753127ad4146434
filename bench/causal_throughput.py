"""Causal-LM training throughput: tunesmith's train step vs a plain HF Trainer script.

    python bench/causal_throughput.py [--rows 256] [--epochs 1] [--batch 8] [--repeats 3]
                                      [--method lora] [--quick]
    ALPACA_JSON=alpaca_data.json python bench/causal_throughput.py --data alpaca --rows 160 \
        --max-length 512 --batch 32 --plain-batch 8 [--modes plain grouped tunesmith]
        [--option batch_tokens=768 ...]

Same model (SmolLM2-135M-Instruct, offline; `--quick`: a 2-layer Llama with its tokenizer),
same rows, rendered with the model's chat template, loss on the answer only: identical
input_ids and labels on both sides. Rows: SST-2 reviews as instructions ("Review: ... Is it
positive or negative?" -> the label word), or (`--data alpaca`) rows of an Alpaca JSON file
(instruction + input -> output; the original Stanford Alpaca file is not in this repository:
point ALPACA_JSON at it). Same LoRA (or full) settings, learning rate and whole epochs.
Baseline, what a user writes from the TRL/HF docs: Trainer + DataCollatorForSeq2Seq (pads
each batch to its longest row, labels with -100), random order, at `--plain-batch` (default
`--batch`: give the largest that fits); `grouped` is that script plus
`train_sampling_strategy="group_by_length"`. tunesmith: `train_model` as `tunesmith step
train` runs it at `--batch` with its defaults (token-budget micro-batches, length grouping,
the loss on supervised positions); `--option KEY=VALUE` sets a TrainOptions field.
Throughput = real (non-pad) tokens trained / the summed duration of the optimizer steps (a
callback times each step, so evaluation and checkpoints are left out); peak RSS is each
process's. Each run is a subprocess; configs interleaved per repeat; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
MODES = ("plain", "grouped", "tunesmith")
MAX_LENGTH = 128
LR = {"lora": 1e-3, "full": 5e-5}


def step_clock():
    """A TrainerCallback summing the wall time of each optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.total, self.steps, self._t = 0.0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.total += time.perf_counter() - self._t
            self.steps += 1

    return StepClock()


def conversations(n: int, seed: int = 0, data: str = "sst2") -> list[list[dict]]:
    """`n` conversations: SST-2 train rows as one-turn instructions (a seeded sample; toy
    rows without the file), or (`alpaca`) Alpaca rows (instruction + input -> output)."""
    import pandas as pd

    if data == "alpaca":
        return alpaca_conversations(n, seed)

    if (SST2 / "train.tsv").is_file():
        df = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype={"sentence": str})
        df = df.sample(n, random_state=seed)
        pairs = zip(df["sentence"].str.strip(), df["label"], strict=True)
    else:
        pairs = ((f"a {'good' if i % 2 else 'bad'} film number {i}", i % 2) for i in range(n))
    return [[{"role": "user", "content": f"Review: {text}\nIs it positive or negative?"},
             {"role": "assistant", "content": "positive" if label else "negative"}]
            for text, label in pairs]


def alpaca_conversations(n: int, seed: int) -> list[list[dict]]:
    """A seeded sample of `$ALPACA_JSON` (a JSON array of instruction/input/output, e.g. the
    original Stanford Alpaca file: SmolLM2-rendered p50 87, p99 307, max 476 tokens), rows
    with an empty output left out."""
    import random

    from tunesmith.objectives.causal_lm.chat import ShapeError, to_messages

    path = os.environ.get("ALPACA_JSON")
    if not path or not Path(path).is_file():
        raise SystemExit("--data alpaca reads ALPACA_JSON=<a JSON array of instruction/input/"
                         "output rows>; none is set (or the file is missing)")
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    random.Random(seed).shuffle(rows)
    out = []
    for row in rows:
        try:
            out.append(to_messages(row))
        except ShapeError:
            continue
        if len(out) == n:
            return out
    raise SystemExit(f"{path}: only {len(out)} usable rows, {n} asked for")


def base_model(quick: bool, work: Path) -> str:
    if not quick:
        from tunesmith.models import resolve_base

        return resolve_base("SmolLM2-135M-Instruct")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunesmith.bases import smollm2

    out = work / "tiny-llama"
    if not (out / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(smollm2.ensure_tokenizer())
        tok.save_pretrained(out)
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id)).save_pretrained(out)
    return str(out)


def rendered(base: str, args) -> list[dict]:
    from transformers import AutoTokenizer

    from tunesmith.objectives.causal_lm.chat import render

    tok = AutoTokenizer.from_pretrained(base)
    return [render(c, tok, args.max_length) for c in conversations(args.rows, data=args.data)]


def run_plain(base: str, rows: list[dict], args, work: Path) -> dict:
    """The baseline script: Trainer + DataCollatorForSeq2Seq + peft, nothing else."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    import datasets

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    if args.method == "lora":
        model = get_peft_model(model, LoraConfig(
            task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    data = datasets.Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]}
                                       for r in rows])
    clock = step_clock()
    sampling = {"train_sampling_strategy": "group_by_length"} if args.worker == "grouped" else {}
    trainer = Trainer(
        model=model, train_dataset=data, data_collator=DataCollatorForSeq2Seq(tok, padding=True),
        callbacks=[clock], args=TrainingArguments(
            output_dir=str(work / args.worker), num_train_epochs=args.epochs, **sampling,
            per_device_train_batch_size=args.plain_batch or args.batch,
            learning_rate=LR[args.method],
            warmup_steps=0.06, logging_steps=1, save_strategy="no", report_to="none",
            use_cpu=True, seed=42, dataloader_num_workers=0))
    trainer.train()
    return {"step_s": clock.total, "steps": clock.steps}


def run_tunesmith(base: str, rows: list[dict], args, work: Path) -> dict:
    """`train_model` on the same rows, written in the tokenize step's format."""
    from tunesmith.tokenization import save_split
    from tunesmith.training.options import LoraOptions, TrainOptions
    from tunesmith.training.run import TrainRequest, train_model

    tokenized = work / "tokenized"
    n_val = max(8, len(rows) // 16)
    for split, part in (("train", rows), ("val", rows[:n_val])):
        save_split({k: [r[k] for r in part] for k in ("input_ids", "labels", "length")},
                   tokenized / split, fingerprint=f"bench-{split}")
    (tokenized / "meta.json").write_text(json.dumps({"task": "causal-lm", "labels": []}))
    clock = step_clock()
    opts = TrainOptions(method=args.method, epochs=args.epochs, lr=LR[args.method],
                        batch_size=args.batch, early_stopping_patience=0,
                        lora=LoraOptions(r=16, alpha=32, dropout=0.05))
    for pair in args.option:  # --option key=value: a TrainOptions field as the step sets it
        key, _, raw = pair.partition("=")
        setattr(opts, key, yaml.safe_load(raw))
    train_model(TrainRequest(base_model=base, task="causal-lm", labels=[],
                             tokenized_dir=tokenized, output_dir=work / "out",
                             checkpoint_dir=work / "ckpt", options=opts, callbacks=[clock]))
    return {"step_s": clock.total, "steps": clock.steps}


def worker(args) -> None:
    """One run in this process; prints one JSON line."""
    import resource

    work = Path(args.work)
    base = base_model(args.quick, work)
    rows = rendered(base, args)
    fn = run_tunesmith if args.worker == "tunesmith" else run_plain
    result = fn(base, rows, args, work / args.worker)
    tokens = sum(r["length"] for r in rows) * args.epochs
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"mode": args.worker, "tokens": tokens,
                      "tokens_per_s": tokens / result["step_s"], "peak_rss_mb": peak_mb,
                      **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", choices=sorted(LR), default="lora")
    parser.add_argument("--data", choices=("sst2", "alpaca"), default="sst2",
                        help="alpaca: rows of $ALPACA_JSON (instruction/input/output)")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--plain-batch", type=int, default=0,
                        help="the plain scripts' batch (default --batch): the largest that fits")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainOptions field for the tunesmith run (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a tiny Llama, 32 rows, 1 repeat")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.rows, args.repeats = 32, 1
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        base_model(args.quick, Path(tmp))  # convert / build once, outside the timings
        for repeat in range(args.repeats):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--worker", mode, "--work", tmp,
                       "--rows", str(args.rows), "--epochs", str(args.epochs), "--batch",
                       str(args.batch), "--method", args.method, "--data", args.data,
                       "--max-length", str(args.max_length),
                       "--plain-batch", str(args.plain_batch),
                       *(f"--option={o}" for o in args.option),
                       *(["--quick"] if args.quick else [])]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
                if out.returncode:
                    raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(row)
                print(f"repeat {repeat + 1} {mode:9} {row['tokens_per_s']:8.1f} tokens/s "
                      f"({row['steps']} steps, {row['step_s']:.1f} s), peak RSS "
                      f"{row['peak_rss_mb']:,.0f} MB", flush=True)
    if set(args.modes) != set(MODES):
        return
    med = {m: statistics.median(r["tokens_per_s"] for r in rows) for m, rows in results.items()}
    ratio = med["tunesmith"] / med["plain"]
    print(f"\nmedian tokens/s: plain {med['plain']:.1f}, grouped {med['grouped']:.1f}, "
          f"tunesmith {med['tunesmith']:.1f}; ratio vs plain {ratio:.2f}x (target >= 1.3x: "
          f"{'met' if ratio >= 1.3 else 'MISSED'}), vs grouped "
          f"{med['tunesmith'] / med['grouped']:.2f}x; method {args.method}, {args.rows} rows x "
          f"{args.epochs:g} epochs, batch {args.batch}; load avg {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
