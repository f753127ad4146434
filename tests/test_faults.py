"""Faults a scheduled pipeline meets, checked the way a user would check afterwards.

Slow: each runs `tunesmith run` processes (Python + torch start-ups, a Prefect API each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_rows, write_csv, write_dataset_yaml

pytestmark = pytest.mark.slow
SCRIPT = Path(sys.executable).parent / "tunesmith"
# 280 rows, a checkpoint every 5 steps: a run long enough to be killed in the middle.
TRAIN = ("train: {epochs: 4, batch_size: 8, lr: 1.0e-3, eval_every_steps: 5,"
         " early_stopping_patience: 0, save_total_limit: 3}\n"
         "evaluate: {latency_examples: 2}\n"
         "register: {require_beat_baseline: false, baseline_can_win: false}\n")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNESMITH_ROOT", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    return {**env, "OMP_NUM_THREADS": "1", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}


def _project(root: Path, tiny_bert: Path, names=("toy",)) -> Path:
    import shutil

    from conftest import REPO

    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    for i, name in enumerate(names):
        write_csv(root / "data" / f"{name}.csv", make_rows(280, seed=i))
        write_dataset_yaml(root, name, base=str(tiny_bert), extra=TRAIN)
    return root


def _run(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "run", *args], cwd=root, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _versions(root: Path, name: str) -> list:
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(uri, uri).search_model_versions(f"name='{name}'")


def _start(root: Path, name: str, log: Path, pause_at: str | None = None,
           pause_dir: Path | None = None) -> subprocess.Popen:
    """`tunesmith run --dataset NAME` in its own process group, its output in `log` (a pipe
    nobody reads while the run is paused could fill and stop it short of the point)."""
    env = _env()
    if pause_at:
        env.update(TUNESMITH_PAUSE_AT=pause_at, TUNESMITH_PAUSE_DIR=str(pause_dir))
    with log.open("w") as out:
        return subprocess.Popen([str(SCRIPT), "run", "--dataset", name], cwd=root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def _wait_paused(proc: subprocess.Popen, paused: Path, log: Path, timeout: float = 600) -> int:
    """Wait for the barrier file `paused` (tunesmith.faults); the pid of the paused process."""
    deadline = time.monotonic() + timeout
    while not paused.exists():
        assert proc.poll() is None, (
            f"exited {proc.returncode} before {paused.name}:\n{_tail(log)}")
        assert time.monotonic() < deadline, f"no {paused.name} in {timeout:.0f}s:\n{_tail(log)}"
        time.sleep(0.1)
    return int(paused.read_text())


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigkill_during_training_resumes_and_registers_once(tmp_path, tiny_bert):
    """SIGKILL the whole `tunesmith run` process tree once a checkpoint exists (paused at the
    first checkpoint save, `train.saved`): the next run reuses the four data steps, resumes
    training from that checkpoint, and ends with the metrics of an uninterrupted run (same
    data, same seed; tolerance 0.02 on the test F1: the resumed epoch replays the same
    batches, summation order may differ) and exactly one registered version."""
    killed = _project(tmp_path / "killed", tiny_bert)
    pause_dir, log = tmp_path / "pause", tmp_path / "killed.log"
    proc = _start(killed, "toy", log, pause_at="train.saved", pause_dir=pause_dir)
    try:
        pid = _wait_paused(proc, pause_dir / "train.saved.paused", log)
        assert os.getpgid(pid) == proc.pid  # the paused trainer is in the group killed below
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Prefect API server, everything
        proc.wait()
    finally:
        _kill_group(proc)
    ckpts = killed / ".tunesmith" / "toy" / "checkpoints"
    saved = sorted(p.parent.name for p in ckpts.glob("*/checkpoint-*/trainer_state.json"))
    assert saved == ["checkpoint-5"], saved  # eval_every_steps: 5, of 4 x 28 steps
    assert not (killed / "models" / "toy" / "model").exists()
    assert _versions(killed, "toy") == []

    again = _run(killed, "--dataset", "toy")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused ingest, clean, validate, tokenize" in again.stdout
    assert "train: resuming from" in again.stderr and "checkpoint-5" in again.stderr, \
        again.stderr[-3000:]
    assert len(_versions(killed, "toy")) == 1

    clean = _project(tmp_path / "clean", tiny_bert)
    assert _run(clean, "--dataset", "toy").returncode == 0
    resumed, whole = (json.loads((p / "reports" / "toy" / "eval" / "metrics.json").read_text())
                      for p in (killed, clean))
    assert resumed["f1_macro"] == pytest.approx(whole["f1_macro"], abs=0.02)


def test_two_datasets_at_once_on_one_sqlite_store(tmp_path, tiny_bert):
    """Two `tunesmith run` of different datasets at the same time on the default SQLite
    store both finish and register; two of the same dataset: one runs, one says it skipped.
    The first `toy` run pauses at `train.start`, inside its dataset lock, until the second
    `toy` run has met the lock and `toy2` (started with it, so both create and migrate the
    store at once) has finished."""
    root = _project(tmp_path / "proj", tiny_bert, names=("toy", "toy2"))
    pause_dir = tmp_path / "pause"
    logs = {key: tmp_path / f"{key}.log" for key in ("toy", "toy2", "toy-again")}
    procs = {"toy": _start(root, "toy", logs["toy"], pause_at="train.start",
                           pause_dir=pause_dir),
             "toy2": _start(root, "toy2", logs["toy2"])}
    try:
        _wait_paused(procs["toy"], pause_dir / "train.start.paused", logs["toy"])
        procs["toy-again"] = _start(root, "toy", logs["toy-again"])
        for key in ("toy-again", "toy2"):
            assert procs[key].wait(timeout=900) == 0, (key, _tail(logs[key]))
        assert procs["toy"].poll() is None  # still paused, still holding the lock
        (pause_dir / "train.start.release").touch()
        assert procs["toy"].wait(timeout=900) == 0, _tail(logs["toy"])
    finally:
        for proc in procs.values():
            _kill_group(proc)
    outs = {key: log.read_text(errors="replace") for key, log in logs.items()}
    assert "toy: skipped (locked)" in outs["toy-again"], outs["toy-again"][-3000:]
    assert "toy: completed" in outs["toy"] and "toy: skipped" not in outs["toy"]
    assert "toy2: completed" in outs["toy2"]
    assert len(_versions(root, "toy")) == 1 and len(_versions(root, "toy2")) == 1


def _step(root: Path, step: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**_env(), **({"TUNESMITH_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run([str(SCRIPT), "step", step, "--dataset", "toy"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def test_sigkill_at_each_register_call_leaves_a_consistent_registry(tmp_path, tiny_bert):
    """SIGKILL `tunesmith step register` at each point where it talks to MLflow
    (tunesmith.faults.POINTS): afterwards every version has its artifacts and its gate tags,
    `champion` (if set) is on such a version; the next register finishes the job with no
    duplicate version. The registered model is deleted between points."""
    import mlflow
    from mlflow import MlflowClient

    from tunesmith.faults import POINTS

    root = _project(tmp_path / "proj", tiny_bert)
    for step in ("ingest", "clean", "validate", "tokenize", "train", "evaluate"):
        assert _step(root, step).returncode == 0, step
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for point in POINTS:
        killed = _step(root, "register", kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        left = _versions(root, "toy")
        assert len(left) == (0 if point == "register.logged" else 1), point
        for mv in left:
            assert {"gate.decision", "gate.reasons", "model.family", "register.job"} <= \
                set(mv.tags), (point, mv.tags)
            assert mlflow.models.get_model_info(f"models:/toy/{mv.version}").flavors
        try:
            champion = client.get_model_version_by_alias("toy", "champion")
        except Exception:  # noqa: BLE001 - no alias yet is consistent too
            champion = None
        assert champion is None, point  # the alias move is the very last call

        resumed = _step(root, "register")
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        after = _versions(root, "toy")
        assert len(after) == 1, (point, [m.version for m in after])  # finished, not duplicated
        assert [m.version for m in after] == [m.version for m in left] or not left
        assert client.get_model_version_by_alias("toy", "champion").version == after[0].version
        assert after[0].description.startswith("# Model card: toy version")
        client.delete_registered_model("toy")
