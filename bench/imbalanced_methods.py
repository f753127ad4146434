"""Every training method with its defaults on an imbalanced SST-2 subset (10% positive), CPU.

    python bench/imbalanced_methods.py --work /tmp/tunesmith-imb             # all methods
    python bench/imbalanced_methods.py --work /tmp/tunesmith-imb --methods lora full
    python bench/imbalanced_methods.py --work /tmp/tunesmith-imb --tune 8    # tunesmith tune
    python bench/imbalanced_methods.py --work /tmp/tunesmith-imb --table     # markdown

The subset: SST-2 train phrases of at least 4 words, deduplicated, 3,600 negative + 400
positive drawn with seed 42 (data/sst2_imb.csv in a scratch project under --work). The
project is the repo's params.yaml plus one dataset YAML with no `train:` section, so each
method trains with exactly the defaults a new user gets (`--set train.method=M` only). The
real step functions run (ingest, clean, validate, tokenize once; then train and evaluate
per method, each method in its own process): the numbers are evaluate's report (test split,
800 rows), with its majority-class and TF-IDF+LR baselines and collapse verdict.

`--tune N` runs `tunesmith tune --dataset sst2_imb --trials N` (default method, default
space), then trains with the chosen rate and evaluates it on test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
NAME = "sst2_imb"
METHODS = ("full", "freeze", "head_only", "lora", "staged", "scratch")
N_NEG, N_POS, MIN_WORDS, SEED = 3600, 400, 4, 42
DATASET_YAML = f"""\
# SST-2 train phrases (>= {MIN_WORDS} words), {N_NEG} negative + {N_POS} positive, seed {SEED}
# (bench/imbalanced_methods.py). No train section: every method runs with its defaults.
description: Imbalanced SST-2 subset (10% positive) for the method defaults benchmark.
source: {{path: data/{NAME}.csv}}
columns: {{text: sentence, label: label}}
labels: [negative, positive]
label_map: {{0: negative, 1: positive}}
clean:
  split: {{train: 0.7, val: 0.1, test: 0.2, seed: 42}}
tokenize: {{max_length: 64}}
evaluate: {{latency_examples: 8}}
"""


def make_project(work: Path) -> Path:
    import pandas as pd

    root = work / "project"
    if (root / "datasets" / f"{NAME}.yaml").is_file():
        return root
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    frame = pd.read_csv(DATA / "train.tsv", sep="\t", quoting=3).dropna()
    frame["sentence"] = frame["sentence"].astype(str).str.strip()
    frame = frame[frame["sentence"].str.split().str.len() >= MIN_WORDS]
    frame = frame.drop_duplicates("sentence")
    picked = pd.concat([frame[frame["label"] == 0].sample(N_NEG, random_state=SEED),
                        frame[frame["label"] == 1].sample(N_POS, random_state=SEED)])
    picked.sample(frac=1.0, random_state=SEED).to_csv(root / "data" / f"{NAME}.csv",
                                                     index=False)
    (root / "datasets" / f"{NAME}.yaml").write_text(DATASET_YAML, encoding="utf-8")
    return root


def prepare(root: Path) -> None:
    from tunesmith.config import load_config
    from tunesmith.tasks.clean import clean
    from tunesmith.tasks.ingest import ingest
    from tunesmith.tasks.tokenize import tokenize
    from tunesmith.tasks.validate import validate

    cfg = load_config(NAME, root)
    if (cfg.dirs.tokenized / "meta.json").is_file():
        return
    for step in (ingest, clean, validate, tokenize):
        step(cfg)


def run_one(root: Path, method: str, extra: list[str]) -> dict:
    """train + evaluate (the step functions) for one method; the eval report's numbers."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from tunesmith.config import load_config
    from tunesmith.tasks.evaluate import evaluate
    from tunesmith.tasks.train import train

    cfg = load_config(NAME, root, [f"train.method={method}", *extra])
    started = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - started
    evaluate(cfg)
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    summary = json.loads((cfg.dirs.model / "train_summary.json").read_text())
    keep = root / "results" / "_".join([method, *[e.replace("=", "-") for e in extra]])
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    shutil.copy(cfg.dirs.eval / "metrics.json", keep / "metrics.json")
    shutil.copy(cfg.dirs.model / "train_summary.json", keep / "train_summary.json")
    pos = report["per_class"]["positive"]
    return {
        "method": method, "extra": extra, "lr": summary["lr"], "epochs": summary["epochs"],
        "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
        "f1_macro": report["f1_macro"], "accuracy": report["accuracy"],
        "positive_f1": pos["f1"], "positive_recall": pos["recall"],
        "val_f1_macro": summary["val_metrics"].get("f1_macro"),
        "collapsed": report["collapse"]["collapsed"], "top_share": report["collapse"]["top_share"],
        "trainable_params": result.trainable_params, "total_params": result.total_params,
        "train_s": train_s, "samples_per_s": summary["samples_per_s"],
        "baseline": {k: report["baseline"][k] for k in ("f1_macro", "accuracy")}
        | {"positive_f1": report["baseline"]["per_class"]["positive"]["f1"]},
        "majority": {k: report["majority"][k] for k in ("f1_macro", "accuracy")}
        | {"positive_f1": 0.0},
        "load": os.getloadavg(),
    }


def run_tune(root: Path, trials: int) -> dict:
    """`tunesmith tune` with the defaults, then the chosen rate trained and tested."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from tunesmith.tune_cli import run_cli

    load = os.getloadavg()
    started = time.perf_counter()
    result = run_cli(NAME, [], trials, [], None, write=False)
    tune_s = time.perf_counter() - started
    lr = result.best["train.lr"]
    tested = run_one(root, "full", [f"train.lr={lr}"])
    return {"trials": result.trials, "best": result.best, "val_f1_macro": result.value,
            "tune_s": tune_s, "tested": tested, "load_before": load,
            "load_after": os.getloadavg()}


def table(results: dict) -> str:
    lines = ["| model | lr | epochs (best) | test macro F1 | positive F1 | accuracy | collapsed "
             "| val macro F1 | train time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    any_row = next((r for r in results.values() if "baseline" in r), None)
    if any_row:
        for name, key in (("majority class", "majority"), ("TF-IDF+LR", "baseline")):
            b = any_row[key]
            lines.append(f"| {name} | | | {b['f1_macro']:.4f} | {b['positive_f1']:.4f} "
                         f"| {b['accuracy']:.4f} | {'yes' if key == 'majority' else 'no'} "
                         "| | |")
    for key, r in results.items():
        if "error" in r:
            lines.append(f"| {key} | {r['error']} |" + " |" * 8)
            continue
        lines.append(
            f"| {key} | {r['lr']:g} | {r['epochs_run']:g} ({r['best_epoch']:g}) "
            f"| {r['f1_macro']:.4f} | {r['positive_f1']:.4f} | {r['accuracy']:.4f} "
            f"| {'**yes**' if r['collapsed'] else 'no'} | {r['val_f1_macro']:.4f} "
            f"| {r['train_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunesmith-imb"))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--set", dest="extra", nargs="*", default=[],
                        help="extra overrides for every method, e.g. train.class_weights=balanced")
    parser.add_argument("--tune", type=int, default=0, help="trials of `tunesmith tune`")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--one", help="internal: run one method in this process")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["TUNESMITH_ROOT"] = str(args.work / "project")
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if args.table:
        print(table({k: v for k, v in results.items() if k != "tune"}))
        if "tune" in results:
            t = results["tune"]
            print(f"\ntune: best {t['best']} val macro F1 {t['val_f1_macro']:.4f}, "
                  f"test macro F1 {t['tested']['f1_macro']:.4f} "
                  f"(positive F1 {t['tested']['positive_f1']:.4f}), "
                  f"{t['tune_s'] / 60:.1f} min for {len(t['trials'])} trials "
                  f"({sum(r['state'] == 'pruned' for r in t['trials'])} pruned), "
                  f"then {t['tested']['train_s'] / 60:.1f} min to train")
        return
    root = make_project(args.work)
    if args.one:
        print(json.dumps(run_one(root, args.one, args.extra)))
        return
    prepare(root)
    if args.tune:
        results["tune"] = run_tune(root, args.tune)
        results_path.write_text(json.dumps(results, indent=2))
        print(json.dumps(results["tune"]["best"]), flush=True)
        return
    for method in args.methods:
        key = "+".join([method, *args.extra])
        proc = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--one",
                               method, "--set", *args.extra], stdout=subprocess.PIPE, text=True)
        results[key] = (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0
                        else {"method": method, "error": f"exit {proc.returncode}"})
        results_path.write_text(json.dumps(results, indent=2))
        print(key, {k: results[key].get(k) for k in ("lr", "f1_macro", "collapsed", "train_s")},
              flush=True)


if __name__ == "__main__":
    main()
