"""Hot dog / not hot dog on pretrained EfficientNet-Lite0: each training method vs scratch.

    python bench/hotdog_methods.py [--runs full head_only freeze lora scratch] [--work DIR]
                                   [--set train.epochs=8 ...] [--quick]

Data: `../shared/data/hotdog` (AGPL: read from there, never copied into the repository;
HOTDOG_DIR overrides). The dataset's source is `hotdog/train` (200 photos), which the
pipeline splits 160/20/20 (train/val/test, stratified); `hotdog/val` (50 photos, 25 per
class) is read by no step and is where "val accuracy" is measured.

In a scratch project under --work (params.yaml copied from the repo, the dataset written by
`tunesmith dataset add`, so the YAML's `train:` is the recipe it writes), each run is:
  `tunesmith step train --set ...`   its own process: wall time, peak RSS, images/s
  the trained model on the 50 hotdog/val photos, decoded and preprocessed as served
  `tunesmith step evaluate`          the pipeline's own test split (20 photos)
  `tunesmith step register`          the gate: is it the new champion?
and at the end `tunesmith predict -d hotdog <hotdog/val folder>` with the champion through
the MLflow model, whose accuracy must equal that run's own hotdog/val score.
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
HOTDOG = Path(os.environ.get("HOTDOG_DIR", REPO.parent / "shared" / "data" / "hotdog"))
NAME = "hotdog"
# Each run: the --set overrides on top of the dataset's recipe. `scratch` is the same
# network (random weights, neutral SE gates), the same budget and rates; `scratch_lr10`
# gives it the 10x body rate d2l's from-scratch comparison uses.
RUNS: dict[str, list[str]] = {
    "full": ["train.method=full"],
    "head_only": ["train.method=head_only"],
    "freeze": ["train.method=freeze"],
    "lora": ["train.method=lora"],
    "scratch": ["train.method=scratch"],
    "scratch_lr10": ["train.method=scratch", "train.lr=1.0e-2"],
    # `full` variants: BatchNorm statistics kept from ImageNet (batches of 16 augmented crops
    # otherwise pull them towards crop statistics), and a 10x lower body rate.
    "full_frozen_bn": ["train.method=full", "train.freeze_batchnorm=true"],
    "full_lr1e-4": ["train.method=full", "train.lr=1.0e-4"],
    "full_frozen_bn_lr3e-4": ["train.method=full", "train.freeze_batchnorm=true",
                              "train.lr=3.0e-4"],
    "full_frozen_bn_16ep": ["train.method=full", "train.freeze_batchnorm=true",
                            "train.epochs=16"],
}
EXTS = {".jpg", ".jpeg", ".png"}


def photos(folder: Path) -> tuple[list[Path], list[str]]:
    """Image files of a folder-per-class tree and their class (the parent folder's name)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
    return files, [p.parent.name for p in files]


def tunesmith(work: Path, *args: str) -> tuple[float, str]:
    """Run the CLI in the project; (wall seconds, stdout). Fails loudly with its stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("tunesmith")), *args], cwd=work,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tunesmith {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return wall, done.stdout


def make_project(work: Path, sets: list[str]) -> None:
    """params.yaml + `dataset add hotdog` (which runs the check); ingest .. tokenize."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    _, out = tunesmith(work, "dataset", "add", NAME, "--source", str(HOTDOG / "train"),
                       "--task", "image-classification")
    print(out.strip(), flush=True)
    over = [a for s in sets for a in ("--set", s)]
    for step in ("ingest", "clean", "validate", "tokenize"):
        tunesmith(work, "step", step, "--dataset", NAME, *over)


def score_val(work: Path, labels: list[str]) -> dict:
    """The trained model (models/hotdog/model) on every hotdog/val photo, as served."""
    import numpy as np

    from tunesmith.metrics import classification_metrics
    from tunesmith.objectives.image_classification.scoring import (
        load_image_classifier,
        predict_proba,
    )

    files, names = photos(HOTDOG / "val")
    model, processor = load_image_classifier(work / "models" / NAME / "model", labels)
    proba = predict_proba(model, processor, files, 25)
    y = np.array([labels.index(n) for n in names])
    m = classification_metrics(y, proba, labels)
    return {"accuracy": float(m["accuracy"]), "f1_macro": float(m["f1_macro"]), "n": len(files)}


def run_one(work: Path, run: str, sets: list[str], labels: list[str]) -> dict:
    over = [a for s in [*sets, *RUNS[run]] for a in ("--set", s)]
    wall, _ = tunesmith(work, "step", "train", "--dataset", NAME, *over)
    summary = json.loads((work / "models" / NAME / "train_summary.json").read_text())
    val = score_val(work, labels)
    tunesmith(work, "step", "evaluate", "--dataset", NAME, *over)
    test = json.loads((work / "reports" / NAME / "eval" / "metrics.json").read_text())
    _, reg = tunesmith(work, "step", "register", "--dataset", NAME, *over)
    row = {
        "run": run, "sets": RUNS[run], "val_accuracy": val["accuracy"],
        "val_f1_macro": val["f1_macro"], "n_val": val["n"],
        "test_accuracy": float(test["accuracy"]), "test_f1_macro": float(test["f1_macro"]),
        "n_test": int(test["n"]), "trainable_params": summary["trainable_params"],
        "total_params": summary["total_params"], "images_per_s": summary["samples_per_s"],
        "peak_rss_mb": summary["peak_memory_mb"], "train_wall_s": summary["wall_time_s"],
        "step_wall_s": wall, "steps": summary["steps"], "epochs": summary["epochs_run"],
        "best_epoch": summary["best_epoch"], "register": reg.strip().splitlines()[-1:],
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(row), flush=True)
    return row


def predict_champion(work: Path) -> dict:
    """`tunesmith predict` on the hotdog/val folder with the champion (the MLflow model)."""
    out = work / "val_predictions.csv"
    tunesmith(work, "predict", "-d", NAME, str(HOTDOG / "val"), "-o", str(out))
    import pandas as pd

    pred = pd.read_csv(out)
    truth = [Path(p).parent.name for p in pred["image"]]
    return {"n": len(pred), "accuracy": float((pred["label"] == truth).mean())}


def table(rows: list[dict]) -> str:
    head = ("| run | val acc (50) | val F1 macro | test acc (20) | trainable params | "
            "images/s | peak RSS MiB | train wall s |")
    lines = [head, "|" + " --- |" * 8]
    for r in rows:
        lines.append(f"| {r['run']} | {r['val_accuracy']:.3f} | {r['val_f1_macro']:.3f} | "
                     f"{r['test_accuracy']:.3f} | {r['trainable_params']:,} | "
                     f"{r['images_per_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['train_wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunesmith-hotdog"),
                    help="scratch project folder (deleted and rebuilt)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra override for every run, e.g. train.epochs=4")
    ap.add_argument("--quick", action="store_true", help="2 steps per run: a smoke run")
    args = ap.parse_args(argv)
    if not (HOTDOG / "train").is_dir() or not (HOTDOG / "val").is_dir():
        raise SystemExit(f"{HOTDOG}: no train/ and val/ folders (set HOTDOG_DIR)")
    if args.quick:
        args.sets += ["train.max_steps=2", "train.eval_every_steps=2",
                      "evaluate.latency_examples=2"]
    labels = sorted(p.name for p in (HOTDOG / "train").iterdir() if p.is_dir())
    print(f"load average {os.getloadavg()}, torch threads {os.environ.get('OMP_NUM_THREADS')}",
          flush=True)
    make_project(args.work, args.sets)
    rows = [run_one(args.work, run, args.sets, labels) for run in args.runs]
    champion = predict_champion(args.work)
    print(table(rows))
    print(f"champion via `tunesmith predict` on {HOTDOG / 'val'}: accuracy "
          f"{champion['accuracy']:.3f} on {champion['n']} photos")
    (args.work / "results.json").write_text(json.dumps({"runs": rows, "champion": champion},
                                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
