"""The pause barrier of tunesmith/faults.py (`TUNESMITH_PAUSE_AT`), which the slow fault tests
synchronise on instead of on how long a step takes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith import faults

CALL = "from tunesmith import faults; faults.point('train.start'); print('passed')"
FAULT_VARS = ("TUNESMITH_PAUSE_AT", "TUNESMITH_PAUSE_DIR", "TUNESMITH_KILL_AT",
              "TUNESMITH_FAIL_AT", "TUNESMITH_FAULT_RANK")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in FAULT_VARS}


def test_a_paused_point_writes_its_pid_and_waits_for_the_release_file(tmp_path: Path):
    pause_dir = tmp_path / "pause"  # created by the point
    env = {**_clean_env(), "TUNESMITH_PAUSE_AT": "train.start",
           "TUNESMITH_PAUSE_DIR": str(pause_dir)}
    proc = subprocess.Popen([sys.executable, "-c", CALL], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        paused = pause_dir / "train.start.paused"
        deadline = time.monotonic() + 60
        while not paused.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no .paused file in 60 s"
            time.sleep(0.02)
        assert paused.read_text() == f"{proc.pid}\n"
        assert [p.name for p in pause_dir.iterdir()] == ["train.start.paused"]  # no temp left
        time.sleep(0.5)  # ten polls: still waiting
        assert proc.poll() is None
        (pause_dir / "train.start.release").touch()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out == "passed\n", out
    assert paused.exists()  # the point removes nothing


def test_an_unarmed_point_returns_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in FAULT_VARS:
        monkeypatch.delenv(var, raising=False)
    started = time.perf_counter()
    for name in faults.TRAIN_POINTS + faults.POINTS:
        assert faults.point(name) is None
    # armed for another point, or for another rank: no pause either
    monkeypatch.setenv("TUNESMITH_PAUSE_DIR", str(tmp_path))
    monkeypatch.setenv("TUNESMITH_PAUSE_AT", "train.saved")
    faults.point("train.start")
    monkeypatch.setenv("TUNESMITH_PAUSE_AT", "train.start")
    monkeypatch.setenv("TUNESMITH_FAULT_RANK", "1")
    monkeypatch.setenv("RANK", "0")
    faults.point("train.start")
    assert time.perf_counter() - started < 1.0
    assert list(tmp_path.iterdir()) == []


def test_a_pause_without_its_folder_is_one_error(monkeypatch: pytest.MonkeyPatch):
    from tunesmith.errors import EnvironmentProblem

    for var in FAULT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TUNESMITH_PAUSE_AT", "train.start")
    with pytest.raises(EnvironmentProblem, match="TUNESMITH_PAUSE_DIR"):
        faults.point("train.start")
