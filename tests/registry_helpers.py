"""Inputs for the evaluate/register/predict tests, made without the other steps.

Writes clean parquet splits straight from `conftest.make_rows` and trains the session's
tiny BERT for a couple of seconds with plain torch, saving it where `train` would.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows

from tunesmith.config import Config, load_config

# The 30k-parameter BERT learns the toy task from random weights in ~1 s but does not
# reliably match TF-IDF on it (0.75-1.0 F1 by seed), so these tests gate on an absolute
# threshold; the baseline rule has its own tests (test_register, test_evaluate).
TEST_GATE = ("register.require_beat_baseline=false", "register.thresholds={f1_macro: 0.7}")


def toy_config(root: Path, *overrides: str) -> Config:
    """The `project` fixture's dataset, tracking in a sqlite file inside the project.

    Latency is timed on 4 examples instead of 32: on a busy 2-core runner each
    single-example call can take 100+ ms.
    """
    return load_config("toy", root, ["evaluate.latency_examples=4", *TEST_GATE, *overrides])


def write_splits(cfg: Config, shuffle_train: bool = False, seed: int = 0) -> None:
    """train (200) / val (20) / test (60) parquet; `shuffle_train` permutes the train labels.

    The test split depends on nothing but the row generator, so two runs that differ only
    in their training data are scored on the same test set.
    """
    rows = make_rows(280)
    frames = {
        "train": pd.DataFrame(rows[:200], columns=["text", "label"]),
        "val": pd.DataFrame(rows[200:220], columns=["text", "label"]),
        "test": pd.DataFrame(rows[220:], columns=["text", "label"]),
    }
    if shuffle_train:
        labels = frames["train"]["label"].tolist()
        random.Random(seed + 1).shuffle(labels)
        frames["train"]["label"] = labels
    cfg.dirs.clean.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame.to_parquet(cfg.dirs.clean / f"{split}.parquet", index=False)
    report = {"splits": {s: {"rows": len(f), "digest": f"toy-{s}-{seed}-{shuffle_train}"}
                         for s, f in frames.items()}}
    (cfg.dirs.clean / "report.json").write_text(json.dumps(report), encoding="utf-8")


def train_tiny(cfg: Config, base: Path, steps: int = 30, seed: int = 3) -> Path:
    """Fine-tune `base` full-batch for `steps` steps (~1 s; 1.0 test accuracy on clean toy
    data, chance on shuffled labels); save model, curve and summary like the train step."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 30k-parameter model only loses to thread overhead
    try:
        return _train(cfg, base, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Config, base: Path, steps: int, seed: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    train = pd.read_parquet(cfg.dirs.clean / "train.parquet")
    tok = AutoTokenizer.from_pretrained(base)
    config = AutoConfig.from_pretrained(
        base, num_labels=len(cfg.labels),
        id2label=dict(enumerate(cfg.labels)), label2id={n: i for i, n in enumerate(cfg.labels)},
    )
    # Seeded fresh weights: the fixture's own weights differ per session, and with them
    # the test F1 of this tiny model.
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    y = torch.tensor([cfg.labels.index(v) for v in train["label"]])
    enc = tok(train["text"].tolist(), padding=True, truncation=True, max_length=32,
              return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    curve = []
    model.train()
    for step in range(1, steps + 1):
        out = model(**enc, labels=y)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        curve.append({"step": step, "epoch": float(step), "loss": out.loss.item()})
    out_dir = cfg.dirs.model / "model"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.eval().save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    pd.DataFrame(curve).to_csv(cfg.dirs.model / "curve.csv", index=False)
    (cfg.dirs.model / "train_summary.json").write_text(
        json.dumps({"method": "full", "steps": steps,
                    "final_loss": curve[-1]["loss"] if curve else None}),
        encoding="utf-8",
    )
    return out_dir


def run_pipeline_tail(cfg: Config, base: Path, shuffle_train: bool = False):
    """Splits, a trained model, then the real evaluate and register steps."""
    from tasks.evaluate import evaluate
    from tasks.register import register

    write_splits(cfg, shuffle_train=shuffle_train)
    train_tiny(cfg, base)
    return evaluate(cfg), register(cfg)


@pytest.fixture(scope="module", autouse=False)
def one_torch_thread():
    """Tiny models on a shared 2-core runner: one intra-op thread is 3-5x faster than two
    fighting other processes (5 greedy generations: 3.5 s vs 17 s measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
