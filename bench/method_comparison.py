"""SST-2 comparison of training methods on the offline MiniLM (CPU): writes a results JSON.

    python bench/method_comparison.py --work /tmp/tunesmith-sst2 [--methods full lora ...]

Train: a stratified 8k subset of /work/shared/data/sst2/train.tsv; val (early stopping,
best checkpoint): 872 other stratified train rows; reported: dev.tsv (872 rows, never
seen in training). Each method runs in its own process so peak RSS is its own.
Staged runs 3 one-epoch stages (head, top 2 blocks, all); the others run 2 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("SST2_DIR", "/work/shared/data/sst2"))
LABELS = ["negative", "positive"]
MAX_LENGTH = 64
COMMON = {"batch_size": 32, "eval_batch_size": 128, "epochs": 2, "early_stopping_patience": 2,
          "warmup_ratio": 0.06, "seed": 42, "log_every_steps": 10}
METHODS: dict[str, dict] = {
    "full": {"lr": 1e-4},
    "freeze": {"lr": 2e-4, "freeze_layers": -2},
    "head_only": {"lr": 2e-3},
    "lora": {"lr": 5e-4, "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": []}},
    "staged": {"lr": 1e-4, "head_lr_mult": 10.0, "stages": [
        {"epochs": 1, "unfreeze": "head", "lr_scale": 1.0},
        {"epochs": 1, "unfreeze": 2, "lr_scale": 1.0},
        {"epochs": 1, "unfreeze": "all", "lr_scale": 0.5}]},
    "scratch": {"lr": 1e-4},
    # Second full recipe (the first landed at 0.867 dev): lower rate, 10x head, batch 16.
    "full_b16": {"method": "full", "lr": 5e-5, "head_lr_mult": 10.0, "batch_size": 16},
}


def prepare(work: Path, n_train: int = 8000, n_val: int = 872, seed: int = 42) -> Path:
    """Tokenized train/val/test (test = dev.tsv) in the tokenize step's on-disk format."""
    import pandas as pd
    from transformers import AutoTokenizer

    import datasets
    from tunesmith.models import resolve_base

    out = work / "tokenized"
    if (out / "meta.json").is_file():
        return out
    base = resolve_base("all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(base)
    train = pd.read_csv(DATA / "train.tsv", sep="\t", quoting=3).dropna()
    # dev.tsv names its text column `content`, train.tsv `sentence`.
    dev = pd.read_csv(DATA / "dev.tsv", sep="\t", quoting=3).dropna()
    dev = dev.rename(columns={"content": "sentence"})
    train = train.drop_duplicates("sentence").sample(frac=1.0, random_state=seed)
    # Stratified: the same class shares as the full train file, in both subsets.
    share = train["label"].value_counts(normalize=True)
    picked = {"train": [], "val": []}
    for label, frac in share.items():
        rows = train[train["label"] == label]
        k_train, k_val = round(n_train * frac), round(n_val * frac)
        picked["train"].append(rows.iloc[:k_train])
        picked["val"].append(rows.iloc[k_train : k_train + k_val])
    splits = {k: pd.concat(v).sample(frac=1.0, random_state=seed) for k, v in picked.items()}
    splits["test"] = dev
    features = datasets.Features(input_ids=datasets.Sequence(datasets.Value("int32")),
                                 labels=datasets.Value("int64"), length=datasets.Value("int32"))
    for name, frame in splits.items():
        enc = tok(frame["sentence"].tolist(), truncation=True, max_length=MAX_LENGTH)
        datasets.Dataset.from_dict({
            "input_ids": enc["input_ids"], "labels": frame["label"].astype(int).tolist(),
            "length": [len(x) for x in enc["input_ids"]]}, features=features,
        ).save_to_disk(str(out / name))
    meta = {"task": "text-classification", "labels": LABELS, "base_model": base,
            "max_length": MAX_LENGTH, "data_digest": f"sst2-{n_train}-{n_val}-{seed}"}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


def accuracy_on(model_dir: Path, split_dir: Path) -> float:
    """Accuracy of a saved model on a tokenized split (no Trainer: what serving would do)."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    from tunesmith.training.data import TokenizedDataset

    ds = TokenizedDataset.load(split_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(model_dir))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(ds), 128):
            batch = collate([ds[j] for j in range(i, min(i + 128, len(ds)))])
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    return correct / len(ds)


def run_one(method: str, work: Path) -> dict:
    import torch

    # The 2 cores are shared with other jobs: two threads per process then stall on each
    # other's barriers (10 s/step observed vs ~0.5 s with one thread), so default to one.
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from tunesmith.models import resolve_base
    from tunesmith.training.options import LoraOptions, Stage, TrainOptions
    from tunesmith.training.run import TrainRequest, train_model

    spec = {**COMMON, **METHODS[method]}
    name, method = method, spec.pop("method", method)
    if "lora" in spec:
        spec["lora"] = LoraOptions(**spec["lora"])
    if "stages" in spec:
        spec["stages"] = [Stage(**s) for s in spec["stages"]]
    tokenized = work / "tokenized"
    meta = json.loads((tokenized / "meta.json").read_text())
    out = work / "models" / name
    summary = train_model(TrainRequest(
        base_model=resolve_base("all-MiniLM-L6-v2"), task="text-classification", labels=LABELS,
        tokenized_dir=tokenized, output_dir=out, checkpoint_dir=work / "checkpoints",
        options=TrainOptions(method=method, **spec), data_digest=meta["data_digest"]))
    t0 = time.perf_counter()
    dev_acc = accuracy_on(out / "model", tokenized / "test")
    return {"method": method, "variant": name, "dev_accuracy": dev_acc,
            "val_accuracy": summary.val_metrics["accuracy"],
            "trainable_params": summary.trainable_params, "total_params": summary.total_params,
            "wall_time_s": summary.wall_time_s, "samples_per_s": summary.samples_per_s,
            "peak_rss_mb": summary.peak_memory_mb, "epochs_run": summary.epochs_run,
            "best_epoch": summary.best_epoch, "dev_eval_s": time.perf_counter() - t0,
            "options": {k: str(v) for k, v in spec.items()}}


def table(results: dict) -> str:
    """The markdown table for docs/method-comparison.md, rows in METHODS order."""
    lines = ["| method | dev accuracy | val accuracy | trainable params | share | epochs (best) "
             "| wall time | train samples/s | peak RSS |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for method in METHODS:
        r = results.get(method)
        if not r or "error" in r:
            lines.append(f"| {method} | {r.get('error', 'not run') if r else 'not run'} |"
                         + " |" * 8)
            continue
        share = r["trainable_params"] / r["total_params"]
        lines.append(
            f"| {method} | {r['dev_accuracy']:.4f} | {r['val_accuracy']:.4f} "
            f"| {r['trainable_params']:,} | {share:.1%} "
            f"| {r['epochs_run']:g} ({r['best_epoch']:g}) "
            f"| {r['wall_time_s'] / 60:.1f} min | {r['samples_per_s']:.1f} "
            f"| {r['peak_rss_mb'] / 1024:.2f} GiB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunesmith-sst2"))
    parser.add_argument("--methods", nargs="*", default=[m for m in METHODS if "_b" not in m])
    parser.add_argument("--results", default="results.json", help="file name under --work")
    parser.add_argument("--one", help="internal: run one method in this process")
    parser.add_argument("--table", action="store_true", help="print the results as markdown")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.table:
        results: dict = {}
        for path in sorted(args.work.glob("results*.json")):
            results.update(json.loads(path.read_text()))
        print(table(results))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.work)))
        return
    prepare(args.work)
    results_path = args.work / args.results
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for method in args.methods:
        proc = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--one", method],
                              stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            results[method] = {"method": method, "error": f"exit {proc.returncode}"}
        else:
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        results_path.write_text(json.dumps(results, indent=2))
        print(method, results[method], flush=True)


if __name__ == "__main__":
    main()
