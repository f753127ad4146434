"""The installed `tunesmith` console script: exit codes and output survive its fast exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "tunesmith"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_ROOT"}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_console_script_keeps_exit_codes_and_output(project: Path):
    ok = _run(["step", "ingest", "--dataset", "toy"], project)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (project / "data" / "raw" / "toy" / "manifest.json").is_file()
    listed = _run(["dataset", "list"], project)
    assert listed.returncode == 0 and "toy" in listed.stdout
    bad = _run(["step", "clean", "--dataset", "nope"], project)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "nope" in bad.stderr
    usage = _run(["run", "--no-such-option"], project)
    assert usage.returncode == 2 and "No such option" in usage.stderr
    unknown = _run(["step", "frobnicate", "--dataset", "toy"], project)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines() == [
        "error: unknown step 'frobnicate'; steps are ingest, clean, validate, tokenize, train, "
        "evaluate, register"]


# The two ways in: the command (and DVC's stages), and a Prefect worker running a deployment,
# which imports `flows.retrain` itself and then MLflow through the steps.
ENTRIES = {
    "command": [str(SCRIPT), "step", "ingest", "--dataset", "toy"],
    "worker": [sys.executable, "-c", "import tunesmith.flows.retrain, mlflow"],
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_no_mlflow_telemetry(entry: str, project: Path, tmp_path: Path):
    """MLflow 3 starts its telemetry on import unless disabled: it writes an installation id
    under the user's config folder and fetches a config from its servers. Not from
    tunesmith, whichever way it is entered. MLflow also stays quiet under pytest or CI, so
    those markers are removed."""
    quiet = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "DO_NOT_TRACK",
             "MLFLOW_DISABLE_TELEMETRY", "TUNESMITH_ROOT"}
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    config = tmp_path / "config"
    env["XDG_CONFIG_HOME"] = str(config)
    ran = subprocess.run(ENTRIES[entry], cwd=project, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert not (config / "mlflow" / "telemetry.json").exists()


def test_the_temporary_api_uses_prefects_own_ephemeral_switches():
    """prefect_env starts the server as Prefect's SubprocessASGIServer does (its private
    PREFECT__SERVER_EPHEMERAL/FINAL switches: no UI, no background services). If Prefect
    renames them, this fails instead of the server silently running its services."""
    import inspect

    from prefect.server.api import server

    source = inspect.getsource(server.create_app)
    assert 'os.getenv("PREFECT__SERVER_EPHEMERAL")' in source
    assert 'os.getenv("PREFECT__SERVER_FINAL")' in source


def test_run_starts_and_stops_its_own_prefect_api(project: Path):
    import re
    import socket

    done = _run(["run", "--dataset", "toy", "--set", "register.require_beat_baseline=false"],
                project)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "toy: completed; ran ingest, clean, validate, tokenize, train, evaluate, register" \
        in done.stdout
    port = int(re.search(r"temporary API on http://127\.0\.0\.1:(\d+)/api", done.stderr)[1])
    with socket.socket() as sock:  # the server went with the command
        assert sock.connect_ex(("127.0.0.1", port)) != 0

    # A bad dataset name fails in one line before any flow run, and stops the API too.
    bad = _run(["run", "--dataset", "nope"], project)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "nope" in bad.stderr
    port = int(re.search(r"temporary API on http://127\.0\.0\.1:(\d+)/api", bad.stderr)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_run_refuses_what_preflight_knows_before_the_flow(project: Path):
    """QLoRA on a CPU machine, a missing base model: one line, the right exit code, and no
    step ran (issue: both used to fail after ingest, clean and validate, under tracebacks)."""
    for sets, needle, code in ((["train.method=qlora"], "needs a CUDA GPU", 5),
                               (["model.base=./no/such/model"], "no such directory", 5)):
        done = _run(["run", "--dataset", "toy", *[x for s in sets for x in ("--set", s)]],
                    project)
        assert done.returncode == code, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and needle in lines[-1]
        assert "Traceback" not in done.stderr + done.stdout
        assert not (project / "data" / "raw" / "toy").exists()


def test_temporary_api_server_runs_at_idle_priority(project: Path, monkeypatch):
    """It boots at normal priority (so a busy machine cannot starve its start-up), then
    every one of its threads runs SCHED_IDLE: it must never preempt training (see
    prefect_env.idle_priority)."""
    from tunesmith import prefect_env

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(project / ".prefect"))
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    prefect_env.start_local_api()
    server = prefect_env._LOCAL_API["server"]
    try:
        assert os.sched_getscheduler(server.pid) == os.SCHED_OTHER
        prefect_env.wait_for_local_api()
        threads = [int(t) for t in os.listdir(f"/proc/{server.pid}/task")]
        assert len(threads) > 1
        assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
    finally:
        prefect_env._stop(server)
        prefect_env._LOCAL_API.clear()


def test_serves_api_server_has_its_own_session_and_dies_with_its_parent(tmp_path: Path):
    """`tunesmith serve`'s temporary API (own_session): the terminal's Ctrl-C, sent to the
    foreground process group, must not reach it; a parent killed outright still takes it
    along (measured: the server exits within ~12 s of losing its parent)."""
    import signal
    import time

    script = ("import os, sys\nfrom tunesmith import prefect_env\n"
              "prefect_env.start_local_api(120, own_session=True)\n"
              "print(prefect_env._LOCAL_API['server'].pid, os.getsid(0), flush=True)\n"
              "sys.stdin.read()\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    server_pid, parent_session = map(int, parent.stdout.readline().split())
    assert os.getsid(server_pid) == server_pid != parent_session
    parent.send_signal(signal.SIGKILL)  # no atexit runs
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{server_pid}"):
        if open(f"/proc/{server_pid}/stat").read().split()[2] == "Z":
            break  # exited; a zombie until init reaps it
        time.sleep(0.1)
    alive = os.path.exists(f"/proc/{server_pid}") and \
        open(f"/proc/{server_pid}/stat").read().split()[2] != "Z"
    assert not alive, f"the API server {server_pid} outlived its killed parent"
