"""Distributed training launched by the train step (train.processes, train.nodes): 2 gloo
workers on CPU through `tunesmith step train`, the door `dvc repro` uses, against one
process; and two "nodes" on one machine (two step processes sharing the project)."""

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
from tunesmith.errors import ConfigError
from tunesmith.training.launch import (
    first_error,
    inside_worker,
    is_launched,
    local_processes,
    node_rank,
)
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


def step_train_command(root: Path, base: Path, *sets: str, env: dict | None = None) -> dict:
    """subprocess keyword arguments for `tunesmith step train` on the toy project."""
    args = [a for s in [f"model.base={base}", *COMMON, *sets] for a in ("--set", s)]
    return dict(
        args=[sys.executable, "-m", "tunesmith.cli", "step", "train", "--dataset", "toy", *args],
        cwd=root, text=True, env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                                  "OMP_NUM_THREADS": "1", **(env or {})})


def step_train(root: Path, base: Path, *sets: str, env: dict | None = None):
    return subprocess.run(**step_train_command(root, base, *sets, env=env), capture_output=True,
                          timeout=600)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_processes_resolve_and_a_worker_does_not_launch_again(monkeypatch):
    assert local_processes(TrainOptions(processes="auto")) == max(1, torch.cuda.device_count())
    assert not is_launched(TrainOptions())
    assert is_launched(TrainOptions(processes=2))
    assert is_launched(TrainOptions(nodes=2))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # inside torchrun: train here
    assert not is_launched(TrainOptions(processes=2))


def test_node_rank_is_read_as_torchrun_reads_it(monkeypatch):
    assert node_rank(TrainOptions(nodes=1)) == 0  # one node: PET_NODE_RANK is not read
    monkeypatch.setenv("PET_NODE_RANK", "1")
    assert node_rank(TrainOptions(nodes=2)) == 1
    assert not inside_worker()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # a hand-run torchrun's worker on node 1
    assert inside_worker()  # runner.run_step then trains here instead of joining again
    monkeypatch.delenv("LOCAL_RANK")
    for bad in ("2", "-1", "one"):
        monkeypatch.setenv("PET_NODE_RANK", bad)
        with pytest.raises(ConfigError, match=f"PET_NODE_RANK='{bad}': train.nodes=2 numbers"):
            node_rank(TrainOptions(nodes=2))


def test_the_reported_failure_across_nodes(tmp_path):
    """What first_error picks from an error folder NodePeers filled."""
    def report(rank: int, message: str, remote: bool = False) -> None:
        (tmp_path / f"rank-{rank}.json").write_text(json.dumps(
            {"rank": rank, "world_size": 4, "type": "ValueError", "message": message}
            | ({"remote": True} if remote else {})))

    report(3, "RuntimeError: Connection reset by peer")  # this node's rank, a consequence
    (tmp_path / "node-lost.json").write_text(json.dumps({"message": "node 0 went away"}))
    assert str(first_error(tmp_path, 1)) == "node 0 went away"
    report(1, "bad batch", remote=True)  # another node's rank said why before it went
    assert str(first_error(tmp_path, 1)) == "rank 1 of 4: bad batch"
    (tmp_path / "agent.json").write_text(json.dumps({"2": -9}))  # a killed worker: the cause
    assert str(first_error(tmp_path, 1)).startswith("worker rank 2 was killed by SIGKILL")


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


@pytest.mark.slow  # two step processes, each launching one worker: ~60 s on 2 shared cores
def test_two_nodes_node_0_writes_and_logs_alone(project_nodrop):
    """Two "nodes" on one machine sharing the project folder, as pods on a shared volume:
    node 1's `tunesmith step train` trains its rank on node 0's settings and exits 0
    without touching MLflow or the pipeline record; node 0's writes models/NAME/ and the
    one run."""
    from mlflow import MlflowClient

    from tunesmith.tracking import tracking_uri

    root, base = project_nodrop
    sets = ("train.batch_size=8", "train.nodes=2", f"train.rdzv_endpoint=localhost:{free_port()}")
    # Node 1 trains node 0's request (from the rendezvous store), whatever its own config
    # says: a base that does not exist there, another batch size (which would desync DDP).
    other = subprocess.Popen(**step_train_command(
        root, Path("/nonexistent/base"), *sets, "train.batch_size=4", env={"PET_NODE_RANK": "1"}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    node0 = step_train(root, base, *sets, env={"PET_NODE_RANK": "0"})
    out1, err1 = other.communicate(timeout=600)
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert other.returncode == 0, err1[-3000:]
    assert "train toy: node=1, nodes=2, ranks=1-1, outputs=written by node 0" in out1, out1
    summary = json.loads((root / "models" / "toy" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8  # 64 rows / (2 x 8), 2 epochs
    uri = tracking_uri(load_config("toy", root))
    client = MlflowClient(uri, uri)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["train/world_size"] == 2

    # Any other step on node 1 is refused, and a node rank out of range is a config error.
    refused = subprocess.run(
        **{**step_train_command(root, base, *sets, env={"PET_NODE_RANK": "1"}),
           "args": [sys.executable, "-m", "tunesmith.cli", "step", "evaluate", "--dataset", "toy",
                    "--set", "train.nodes=2"]}, capture_output=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "error: PET_NODE_RANK=1 with train.nodes=2: node 1 runs only `tunesmith step train`; "
        "node 0 runs the pipeline (step evaluate refused)"), refused.stderr[-2000:]
    wrong = step_train(root, base, *sets, env={"PET_NODE_RANK": "2"})
    assert wrong.returncode == 2 and "PET_NODE_RANK='2': train.nodes=2 numbers the nodes 0..1" \
        in wrong.stderr, wrong.stderr[-2000:]


KILLED_0 = ("error: worker rank 0 was killed by SIGKILL without an error of its own; the "
            "others were stopped (a rerun resumes from the last complete checkpoint)")


@pytest.mark.slow  # ~40 s each
@pytest.mark.parametrize("fault, line", [
    ({"TUNESMITH_FAIL_AT": "train.start", "TUNESMITH_FAULT_RANK": "1"},
     "error: rank 1 of 2: injected fault at train.start"),
    ({"TUNESMITH_KILL_AT": "train.saved", "TUNESMITH_FAULT_RANK": "0"}, KILLED_0),
], ids=["rank-1-raises-on-node-1", "rank-0-killed-on-node-0"])
def test_a_failing_rank_fails_both_nodes_steps_with_its_line(project_nodrop, fault, line):
    """Rank 1 (node 1) fails before joining the process group: node 0's rank 0 would wait
    for it for the group's 30-minute timeout. Either way round, both steps end with the
    failing rank's line."""
    root, base = project_nodrop
    sets = ("train.batch_size=8", "train.nodes=2", f"train.rdzv_endpoint=localhost:{free_port()}")
    other = subprocess.Popen(**step_train_command(root, base, *sets,
                                                  env={"PET_NODE_RANK": "1", **fault}),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    node0 = step_train(root, base, *sets, env={"PET_NODE_RANK": "0", **fault})
    _, err1 = other.communicate(timeout=300)
    for code, stderr in ((node0.returncode, node0.stderr), (other.returncode, err1)):
        assert code == 5, stderr[-3000:]
        assert [ln for ln in stderr.splitlines() if ln.startswith("error:")] == [line], \
            stderr[-3000:]
        assert "Traceback" not in stderr and "frame #" not in stderr  # nor C++ store warnings
    assert not (root / "models" / "toy" / "train_summary.json").exists()


@pytest.mark.slow  # ~50 s
def test_node_1_stops_when_node_0s_step_is_killed(project_nodrop):
    """Pod 0 evicted mid-training: its launcher stops its workers (stop_with_parent) and the
    store it hosts goes away; node 1 stops within seconds instead of at the group timeout."""
    import signal
    import time

    root, base = project_nodrop
    sets = ("train.batch_size=8", "train.nodes=2", "train.epochs=40",  # killed in epoch 2
            f"train.rdzv_endpoint=localhost:{free_port()}")
    other = subprocess.Popen(**step_train_command(root, base, *sets, env={"PET_NODE_RANK": "1"}),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    node0 = subprocess.Popen(**step_train_command(root, base, *sets, env={"PET_NODE_RANK": "0"}),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(root.rglob("checkpoint-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # training has begun: the first epoch's checkpoint
    node0.send_signal(signal.SIGKILL)
    node0.communicate(timeout=60)
    killed_at = time.monotonic()
    out1, err1 = other.communicate(timeout=120)
    assert other.returncode == 5, out1 + err1[-3000:]
    assert err1.strip().splitlines() == [
        f"error: node 0's launcher at {sets[-1].split('=')[1]} went away (its step reports "
        "why)"], err1[-3000:]
    assert time.monotonic() - killed_at < 30
    assert not (root / "models" / "toy" / "train_summary.json").exists()
