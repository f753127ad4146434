"""CPU training throughput: tunesmith's train step vs plain HF Trainer scripts.

    python bench/train_throughput.py [--rows 2048] [--steps N] [--batch 32] [--repeats 3] [--quick]

Same model (offline all-MiniLM-L6-v2), same SST-2 subset (seeded sample of train.tsv; a
256-row val split from other rows), same batch size and max_length 128, same
evaluation/checkpoint schedule (per epoch, best model at end: the docs' recipe), and by
default one whole epoch (rows / batch steps: length-grouped batches are not uniform over
an epoch, so a short window flatters or punishes them by chance). Baselines:
  quickstart  tokenizer(..., padding="max_length") then Trainer (the HF docs' quick start)
  careful     tokenizer(..., truncation=True) + DataCollatorWithPadding (dynamic padding)
  grouped     careful + train_sampling_strategy="group_by_length" (one flag; the strongest
              plain script: transformers' default optimizer is fused AdamW since torch 2.8)
tunesmith     tasks.train.train(cfg): dynamic padding (to a multiple of 8 on CUDA only),
              length grouping, fused AdamW.
Ratios are against `grouped`. Throughput: steady-state samples/s between the end of step
SKIP (warm-up) and the end of the last step, timed by a callback, so the one evaluation +
checkpoint that all do at the end is excluded; also samples per CPU-second (robust to other
load on a shared machine). Each run is its own subprocess; configs are interleaved per
repeat; medians. Efficiency: model FLOPs/s (6 x non-embedding parameters x real tokens,
plus attention 6 x layers x hidden x length^2 per row) over this CPU's fp32 matmul peak,
measured in the same run (2048 x 2048 torch.mm, best of 10, on the threads torch uses).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
LABELS = ["negative", "positive"]
MAX_LENGTH = 128
N_VAL = 256
MODES = ("quickstart", "careful", "grouped", "tunesmith")
STRONGEST = "grouped"  # the plain baseline the ratio is reported against
SKIP = 2  # warm-up steps left out of the timing (allocator, first-batch overheads)


def cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def step_timer():
    """A TrainerCallback recording (wall, cpu) at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), cpu_s()))

        def rates(self, batch: int) -> dict:
            skip = min(SKIP, len(self.marks) - 2)
            (w0, c0), (w1, c1) = self.marks[skip], self.marks[-1]
            n = batch * (len(self.marks) - 1 - skip)
            return {"samples_per_s": n / (w1 - w0), "samples_per_cpu_s": n / max(c1 - c0, 1e-9)}

    return StepTimer()


def load_rows(n: int, seed: int = 0):
    """(train, val) frames with columns text, label (int): a seeded sample of SST-2 train."""
    import pandas as pd

    if (SST2 / "train.tsv").is_file():
        df = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype={"sentence": str})
        df = df.rename(columns={"sentence": "text"}).sample(n + N_VAL, random_state=seed)
    else:  # smoke runs without the shared data
        words = ["a good film", "a bad film", "quite dull", "really moving and warm"]
        df = pd.DataFrame({"text": [f"{words[i % 4]} {i}" for i in range(n + N_VAL)],
                           "label": [int(i % 4 in (0, 3)) for i in range(n + N_VAL)]})
    df = df.reset_index(drop=True)
    return df.iloc[:n], df.iloc[n:]


def trainer_args(out: Path, steps: int, batch: int, grouped: bool, seed: int = 42):
    """The baselines' TrainingArguments: the docs' recipe, one epoch or capped at `steps`."""
    from transformers import TrainingArguments

    sampling = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    return TrainingArguments(
        output_dir=str(out), max_steps=steps, num_train_epochs=1, **sampling,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=64, learning_rate=5e-5, weight_decay=0.01,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", report_to="none", seed=seed, use_cpu=True,
        dataloader_num_workers=0,
    )


def run_baseline(mode: str, work: Path, rows: int, steps: int, batch: int) -> dict:
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    from datasets import Dataset
    from tunesmith.models import resolve_base

    base = resolve_base("all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(base)
    train, val = load_rows(rows)
    pad = {"padding": "max_length"} if mode == "quickstart" else {}

    def encode(frame):
        ds = Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=MAX_LENGTH, **pad),
                      batched=True, remove_columns=["text"])

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(LABELS))
    timer = step_timer()
    trainer = Trainer(
        model=model, args=trainer_args(work / "ckpt", steps, batch, grouped=mode == "grouped"),
        train_dataset=encode(train),
        eval_dataset=encode(val), processing_class=tok, compute_metrics=accuracy,
        data_collator=None if mode == "quickstart" else DataCollatorWithPadding(tok),
        callbacks=[timer],
    )
    t0 = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    return {**timer.rates(batch),
            "trainer_samples_per_s": result.metrics["train_samples_per_second"],
            "train_wall_s": wall, "steps": trainer.state.global_step}


def write_project(work: Path, rows: int, steps: int, batch: int,
                  overrides: list[str] | tuple[str, ...] = ()):
    """A project whose tokenize output (the train step's on-disk contract) holds the
    sample; its Config."""
    import shutil

    from transformers import AutoTokenizer

    import datasets
    from tunesmith.config import load_config
    from tunesmith.models import resolve_base

    root = work / "proj"
    (root / "datasets").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "datasets" / "sst.yaml").write_text(
        "source: {path: data/none.tsv}\ncolumns: {text: text, label: label}\n"
        f"labels: {LABELS}\n", encoding="utf-8")
    cfg = load_config("sst", root, [f"train.max_steps={steps}", f"train.batch_size={batch}",
                                     "train.eval_batch_size=64", "train.epochs=1", *overrides])
    base = resolve_base(cfg.model.base, root)
    tok = AutoTokenizer.from_pretrained(base)
    features = datasets.Features(input_ids=datasets.Sequence(datasets.Value("int32")),
                                 labels=datasets.Value("int64"), length=datasets.Value("int32"))
    for split, frame in zip(("train", "val"), load_rows(rows), strict=True):
        ids = tok(frame["text"].tolist(), truncation=True, max_length=MAX_LENGTH)["input_ids"]
        datasets.Dataset.from_dict(
            {"input_ids": ids, "labels": frame["label"].astype(int).tolist(),
             "length": [len(i) for i in ids]}, features=features,
        ).save_to_disk(str(cfg.dirs.tokenized / split))
    (cfg.dirs.tokenized / "meta.json").write_text(json.dumps({
        "task": cfg.task, "labels": LABELS, "base_model": base, "max_length": MAX_LENGTH,
        "data_digest": f"bench-{rows}"}), encoding="utf-8")
    return cfg


def run_tunesmith(work: Path, rows: int, steps: int, batch: int,
                  overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Write the tokenize step's on-disk contract, then call the train step itself."""
    from tunesmith.train_request import build_request
    from tunesmith.training.run import train_model

    cfg = write_project(work, rows, steps, batch, overrides)
    # tasks.train.train(cfg) is exactly build_request + train_model; split to add the timer.
    req = build_request(cfg)
    timer = step_timer()
    req.callbacks.append(timer)
    t0 = time.perf_counter()
    summary = train_model(req)
    wall = time.perf_counter() - t0
    return {**timer.rates(batch), "trainer_samples_per_s": summary.samples_per_s,
            "train_wall_s": wall, "steps": summary.steps}


def matmul_peak_gflops(n: int = 2048, tries: int = 10) -> float:
    """fp32 torch.mm GFLOP/s at n x n on the threads torch uses here: best of `tries`."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, allocator
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_flops_per_epoch(rows: int) -> tuple[float, int]:
    """Training FLOPs of one epoch over the train rows, counting real tokens only:
    per row 6 * N * len (N = non-embedding parameters: forward 2N, backward 4N per token)
    plus attention 6 * layers * hidden * len^2 (QK^T and AV, forward and backward).
    Returns (FLOPs, real tokens)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from tunesmith.models import resolve_base

    base = resolve_base("all-MiniLM-L6-v2")
    config = AutoConfig.from_pretrained(base)
    model = AutoModel.from_pretrained(base)
    non_embedding = sum(p.numel() for name, p in model.named_parameters()
                        if not name.startswith("embeddings."))
    non_embedding += config.hidden_size * 2 + 2  # the classifier head: 2 labels
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(base)(
        load_rows(rows)[0]["text"].tolist(), truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    attention = 6 * config.num_hidden_layers * config.hidden_size * sum(n * n for n in lengths)
    return 6 * non_embedding * sum(lengths) + attention, sum(lengths)


def child(mode: str, rows: int, steps: int, batch: int) -> dict:
    import torch

    with tempfile.TemporaryDirectory(prefix=f"bench-train-{mode}-") as tmp:
        if mode == "tunesmith":
            out = run_tunesmith(Path(tmp), rows, steps, batch)
        else:
            out = run_baseline(mode, Path(tmp), rows, steps, batch)
    return {"mode": mode, "threads": torch.get_num_threads(), **out}


def run_child(script: str, mode: str, args: list[str]) -> dict:
    """`script --child MODE ARGS` in its own process, offline; its last stdout line (JSON)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, script, "--child", mode, *args], env=env,
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=-1, help="-1: one whole epoch (default)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="64 rows, 2 steps, batch 4, 1 repeat")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--json", type=Path, help="also write all measurements here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.steps, args.batch, args.repeats = 64, 2, 4, 1
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.steps, args.batch)))
        return 0

    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
    for rep in range(args.repeats):
        for mode in args.modes:  # interleaved, so machine load drifts hit every config alike
            res = run_child(__file__, mode, ["--rows", str(args.rows), "--steps",
                                             str(args.steps), "--batch", str(args.batch)])
            runs[mode].append(res)
            print(f"repeat {rep + 1} {mode:10} {res['samples_per_s']:7.1f} samples/s "
                  f"{res['samples_per_cpu_s']:7.1f} samples/cpu-s ({res['steps']} steps, "
                  f"train() {res['train_wall_s']:.1f}s)", flush=True)

    med = {m: statistics.median(r["samples_per_s"] for r in runs[m]) for m in args.modes}
    cpu = {m: statistics.median(r["samples_per_cpu_s"] for r in runs[m]) for m in args.modes}
    peak = matmul_peak_gflops()
    flops, tokens = model_flops_per_epoch(args.rows)
    per_sample = flops / args.rows
    window = "one epoch" if args.steps < 0 else f"{args.steps} steps"
    print(f"\n{args.rows} rows ({tokens:,} real tokens), {window} x batch {args.batch}, "
          f"max_length {MAX_LENGTH}, median of {args.repeats}; load avg "
          f"{os.getloadavg()[0]:.1f}; fp32 matmul peak {peak:.1f} GFLOP/s "
          f"({runs[args.modes[0]][0]['threads']} threads)")
    for m in args.modes:
        achieved = med[m] * per_sample / 1e9
        print(f"{m:10} {med[m]:8.1f} samples/s {cpu[m]:8.1f} samples/cpu-s "
              f"{achieved:6.1f} model GFLOP/s ({100 * achieved / peak:4.1f}% of peak)")
    for m in ("quickstart", "careful", "grouped"):
        if m in med and "tunesmith" in med:
            print(f"ratio tunesmith / {m}: {med['tunesmith'] / med[m]:.2f}x wall, "
                  f"{cpu['tunesmith'] / cpu[m]:.2f}x cpu" + ("  <- the target's baseline"
                                                              if m == STRONGEST else ""))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "runs": runs, "matmul_peak_gflops": peak,
                                         "model_flops_per_epoch": flops}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
