"""SST-2 as instructions on SmolLM2-135M-Instruct: zero-shot base vs LoRA vs full, on dev.tsv.

    python bench/llm_sst2.py [--train-rows 2000] [--methods lora,full] [--epochs 1]
                             [--no-zero-shot] [--quick]

A temporary project with one causal-LM dataset: a seeded sample of SST-2 train.tsv, each row
a one-turn chat ("Review: <sentence>\\nIs this review positive or negative?" -> the label
word), on the default base (SmolLM2-135M-Instruct) with the project's defaults (the method's
learning rate included) but for the method, epochs and `--set` overrides. The data steps and
each training run are `tunesmith step` subprocesses (peak RSS is the training process's);
then the fine-tuned model and the untuned base are scored on all 872 rows of dev.tsv, which
no step saw: generated-answer accuracy (greedy, exact match after lower-casing and stripping
punctuation), response-only loss and perplexity. Prints one JSON line per model and a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
QUESTION = "Review: {text}\nIs this review positive or negative?"


def chat(text: str, label: int) -> dict:
    return {"messages": [{"role": "user", "content": QUESTION.format(text=text.strip())},
                         {"role": "assistant", "content": "positive" if label else "negative"}]}


def make_project(root: Path, rows: int, base: str) -> None:
    import pandas as pd

    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype={"sentence": str})
    train = train.sample(rows, random_state=0)
    (root / "data" / "sst.jsonl").write_text("".join(
        json.dumps(chat(t, y)) + "\n" for t, y in zip(train["sentence"], train["label"],
                                                      strict=True)), encoding="utf-8")
    (root / "datasets" / "sst.yaml").write_text(
        "task: causal-lm\nsource: {path: data/sst.jsonl}\ncolumns: {messages: messages}\n"
        f"model: {{base: {base}}}\ntokenize: {{max_length: 128}}\n"
        "validate: {min_rows: 20}\nevaluate: {batch_size: 32}\n", encoding="utf-8")


def step(root: Path, name: str, sets: list[str]) -> float:
    started = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "tunesmith"), "step", name, "--dataset", "sst"]
    for item in sets:
        cmd += ["--set", item]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1",
                               "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"})
    if done.returncode:
        raise SystemExit(f"tunesmith step {name} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def dev_rows(limit: int | None) -> tuple[list, list[str]]:
    import pandas as pd

    dev = pd.read_csv(SST2 / "dev.tsv", sep="\t", quoting=3, header=0, names=["label", "text"])
    dev = dev.head(limit) if limit else dev
    convs = [chat(t, y)["messages"] for t, y in zip(dev["text"].astype(str), dev["label"],
                                                     strict=True)]
    return convs, [c[-1]["content"] for c in convs]


def first_label_accuracy(answers: list[str], refs: list[str]) -> float:
    """The share of answers whose first label word ("positive"/"negative") is the reference:
    how a user reads a chatty zero-shot answer ("The review is positive"); exact match
    (the pipeline's metric) counts that as wrong."""
    import re

    labels = sorted(set(refs))
    hits = 0
    for answer, ref in zip(answers, refs, strict=True):
        found = [(m.start(), label) for label in labels
                 if (m := re.search(rf"\b{label}\b", answer.lower()))]
        hits += bool(found) and min(found)[1] == ref
    return hits / max(len(refs), 1)


def score(path: str, convs: list, refs: list[str], template: str) -> dict:
    from tunesmith.objectives.causal_lm import evaluation as E

    model, tok = E.load_lm(path)
    started = time.perf_counter()
    answers = E.generate(model, tok, [c[:-1] for c in convs], template, max_new_tokens=4,
                         batch_size=32)
    gen_s = time.perf_counter() - started
    loss = E.lm_loss(model, tok, convs, 128, template, batch_size=32)
    values = sorted({E.normalise(a) for a in answers})
    return {"accuracy": E.exact_match(answers, refs),
            "first_label_accuracy": first_label_accuracy(answers, refs),
            "dev_loss": loss["eval_loss"],
            "dev_perplexity": loss["perplexity"], "generate_s": round(gen_s, 1),
            "answers_seen": values[:6]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="extra overrides for every training run")
    parser.add_argument("--no-zero-shot", dest="zero_shot", action="store_false",
                        help="skip scoring the untuned base (it does not depend on the "
                        "train subset: ~10 min of the run on 2 CPU cores)")
    parser.add_argument("--quick", action="store_true",
                        help="40 rows, 20 dev rows, 3 steps: a smoke run")
    args = parser.parse_args()
    if not (SST2 / "dev.tsv").is_file():
        raise SystemExit(f"{SST2}: no SST-2 copy (set SST2_DIR)")
    from tunesmith.config import load_config
    from tunesmith.models import resolve_base

    rows, dev_limit = (40, 20) if args.quick else (args.train_rows, None)
    convs, refs = dev_rows(dev_limit)
    base = resolve_base("SmolLM2-135M-Instruct")
    print(f"load average {os.getloadavg()[0]:.1f}; base {base}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        make_project(root, rows, base)
        for name in ("ingest", "clean", "validate", "tokenize"):
            step(root, name, [])
        template = load_config("sst", root).train.prompt_template
        if args.zero_shot:
            zero = {"model": "zero-shot base", **score(base, convs, refs, template)}
            print(json.dumps(zero), flush=True)
            results.append(zero)
        for method in [m for m in args.methods.split(",") if m]:
            sets = [f"train.method={method}", f"train.epochs={args.epochs}", *args.sets,
                    *(["train.max_steps=3"] if args.quick else [])]
            wall = step(root, "train", sets)
            summary = json.loads((root / "models" / "sst" / "train_summary.json").read_text())
            tokens = json.loads((root / "data" / "tokenized" / "sst" / "token_report.json")
                                .read_text())
            mean_tokens = tokens["tokens"]["train"]["p50"]
            row = {"model": method, **score(str(root / "models" / "sst" / "model"), convs, refs,
                                            template),
                   "trainable_params": summary["trainable_params"],
                   "train_rows": summary["n_train"], "steps": summary["steps"],
                   "samples_per_s": round(summary["samples_per_s"], 2),
                   "tokens_per_s_approx": round(summary["samples_per_s"] * mean_tokens, 1),
                   "peak_rss_mb": round(summary["peak_memory_mb"]),
                   "train_process_s": round(wall, 1), "sets": sets}
            print(json.dumps(row), flush=True)
            results.append(row)
    print("\n| model | dev accuracy (exact) | first label word | dev perplexity | trainable "
          "params | tokens/s | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['model']} | {r['accuracy']:.3f} | {r['first_label_accuracy']:.3f} | "
              f"{r['dev_perplexity']:.3f} | "
              f"{r.get('trainable_params', '-')} | {r.get('tokens_per_s_approx', '-')} | "
              f"{r.get('peak_rss_mb', '-')} MB |")


if __name__ == "__main__":
    main()
