"""Distributed training launched by the train step (train.processes): 2 gloo workers on CPU
through `tunesmith step train`, the door `dvc repro` uses, against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_tokenized, without_dropout
from safetensors.torch import load_file

from tunesmith.config import load_config
from tunesmith.training.launch import is_launched, local_processes
from tunesmith.training.options import TrainOptions

# 64 train rows, 2 epochs; the global batch is 16 both ways (1 x 16, 2 x 8).
COMMON = ["train.epochs=2", "train.early_stopping_patience=0", "train.lr=1e-3",
          "train.warmup_ratio=0"]


@pytest.fixture
def project_nodrop(project: Path, tiny_bert: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The toy project on a dropout-free copy of the tiny BERT (dropout masks are drawn per
    process, so with dropout 1 and 2 processes could not agree), tokenized."""
    base = without_dropout(tiny_bert, tmp_path / "bert-nodrop")
    cfg = load_config("toy", project, overrides=[f"model.base={base}"])
    make_tokenized(cfg.dirs.tokenized, base, cfg.labels)
    return project, base


def step_train(root: Path, base: Path, *sets: str, env: dict | None = None):
    args = [a for s in [f"model.base={base}", *COMMON, *sets] for a in ("--set", s)]
    return subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "step", "train", "--dataset", "toy", *args],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
             "OMP_NUM_THREADS": "1", **(env or {})})


def test_processes_resolve_and_a_worker_does_not_launch_again(monkeypatch):
    assert local_processes(TrainOptions(processes="auto")) == max(1, torch.cuda.device_count())
    assert not is_launched(TrainOptions())
    assert is_launched(TrainOptions(processes=2))
    assert is_launched(TrainOptions(nodes=2))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # inside torchrun: train here
    assert not is_launched(TrainOptions(processes=2))


@pytest.mark.slow  # 3 process trees with torch start-ups: ~80 s on 2 shared cores
def test_two_processes_train_like_one_with_the_same_global_batch(project_nodrop):
    root, base = project_nodrop
    model = root / "models" / "toy"
    one = step_train(root, base, "train.batch_size=16")
    assert one.returncode == 0, one.stderr[-3000:]
    one_summary = json.loads((model / "train_summary.json").read_text())
    one_weights = load_file(model / "model" / "model.safetensors")

    two = step_train(root, base, "train.batch_size=8", "train.processes=2")
    assert two.returncode == 0, two.stderr[-3000:]
    two_summary = json.loads((model / "train_summary.json").read_text())
    assert (one_summary["world_size"], two_summary["world_size"]) == (1, 2)
    assert one_summary["steps"] == two_summary["steps"] == 8  # 64 rows / 16, 2 epochs
    # Same rows per optimizer step, gradients averaged across the 2 ranks: equal to float
    # summation order (measured 2026-12-01: 6e-8 on the val loss, 2e-8 on the weights).
    assert two_summary["val_metrics"]["loss"] == pytest.approx(
        one_summary["val_metrics"]["loss"], abs=1e-4)
    two_weights = load_file(model / "model" / "model.safetensors")
    worst = max((two_weights[k] - one_weights[k]).abs().max().item() for k in one_weights)
    assert worst < 1e-4, worst


@pytest.mark.slow  # ~40 s
def test_a_failing_rank_fails_the_step_with_its_one_line(project_nodrop):
    root, base = project_nodrop
    failed = step_train(root, base, "train.batch_size=8", "train.processes=2",
                        env={"TUNESMITH_FAIL_AT": "train.start", "TUNESMITH_FAULT_RANK": "1"})
    assert failed.returncode == 5, failed.stderr[-3000:]  # EnvironmentProblem's exit code
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rank 1 of 2: injected fault at train.start"], failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr and "ChildFailedError" not in failed.stderr
    assert not (root / "models" / "toy" / "train_summary.json").exists()  # nothing written


@pytest.mark.slow  # 3 launched runs: ~3 min on 2 shared cores
def test_a_killed_two_process_run_resumes_where_it_stopped(project_nodrop):
    root, base = project_nodrop
    sets = ("train.batch_size=8", "train.processes=2", "train.epochs=3")
    model = root / "models" / "toy"
    whole = step_train(root, base, *sets)
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = load_file(model / "model" / "model.safetensors")
    shutil.rmtree(model)

    # Rank 0 SIGKILLed right after its first checkpoint (epoch 1 of 3, step 4).
    killed = step_train(root, base, *sets, env={"TUNESMITH_KILL_AT": "train.saved",
                                                "TUNESMITH_FAULT_RANK": "0"})
    assert killed.returncode == 5, killed.stderr[-3000:]
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: worker rank 0 was killed by SIGKILL without an error of its "
                      "own; the others were stopped (a rerun resumes from the last complete "
                      "checkpoint)"], killed.stderr[-3000:]
    assert not (model / "train_summary.json").exists()

    resumed = step_train(root, base, *sets)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 12
    assert summary["resumed_from"] and summary["resumed_from"].endswith("checkpoint-4")
    # Same data position after the resume (per-epoch seeded sampler): the same weights.
    weights = load_file(model / "model" / "model.safetensors")
    worst = max((weights[k] - uninterrupted[k]).abs().max().item() for k in weights)
    assert worst < 1e-4, worst


@pytest.mark.slow  # ~80 s
@pytest.mark.parametrize("extra", [["train.method=lora"],
                                   ["train.fsdp=full_shard auto_wrap"]], ids=["lora", "fsdp"])
def test_lora_and_fsdp_train_in_two_launched_processes(project_nodrop, extra):
    root, base = project_nodrop
    done = step_train(root, base, "train.batch_size=8", "train.processes=2", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((root / "models" / "toy" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8
    assert (root / "models" / "toy" / "model" / "model.safetensors").is_file()
