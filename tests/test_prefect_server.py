"""Deployments against a real `prefect server start`: work pool + worker, `tunesmith serve`,
and `tunesmith run` with PREFECT_API_URL. Slow (a server, a worker and several CLI
processes on a loaded 2-core machine: a few minutes); the prefect.yaml check is fast.

    OMP_NUM_THREADS=1 .venv/bin/pytest -m slow tests/test_prefect_server.py -s
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO, make_rows, write_csv, write_dataset_yaml

from tunesmith.config import dataset_names, load_config
from tunesmith.fingerprint import code_digest
from tunesmith.steps import STEPS

BIN = Path(sys.executable).parent
# TF-IDF aces toy data: no baseline rule, and the baseline is not registered beside the
# model (one version a run). The tiny BERT must learn, or the collapse rule refuses it and
# no champion is set: tests/test_flow.py's setting on 280 rows (ROWS) does, ~3 s.
FAST = ("train: {epochs: 6, lr: 1.0e-3, batch_size: 8, early_stopping_patience: 5}\n"
        "evaluate: {latency_examples: 2}\n"
        "register: {require_beat_baseline: false, baseline_can_win: false}\n")
ROWS = 280
RUN_TIMEOUT_S = 420  # one tiny retrain in a fresh process: ~1 min idle, more under load


def test_prefect_yaml_has_one_deployment_per_dataset_on_its_schedule():
    """prefect.yaml is written by hand: it must name every dataset, on the dataset's cron."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {f"retrain-{n}" for n in dataset_names(REPO)}
    for name in dataset_names(REPO):
        d = deployments[f"retrain-{name}"]
        assert d["parameters"] == {"dataset": name}
        assert [s["cron"] for s in d["schedules"]] == [load_config(name, REPO).schedule]
        assert d["concurrency_limit"] == 1
        assert d["work_pool"]["name"] == "tunesmith-process"
        # A module path, not flows/retrain.py: a project outside this repo has no flows/.
        assert d["entrypoint"] == "tunesmith.flows.retrain:retrain"


# --- the slow end-to-end test ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    # Own session, so stopping it also stops what it spawned (the server's services,
    # the runner's flow-run processes).
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            cwd=cwd, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> str:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    out = done.stdout + done.stderr
    print(f"$ {' '.join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args))}"
          f"  -> rc {done.returncode} in {time.perf_counter() - started:.1f}s")
    assert done.returncode == 0, out[-3000:]
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prefect server on a free loopback port; yields (api_url, env for clients)."""
    home = tmp_path / "prefect-server"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_SERVER_UI_ENABLED="false")
    port = _free_port()
    log = tmp_path / "server.log"
    proc = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                   "--port", str(port), "--no-ui"], log, env, tmp_path)
    api = f"http://127.0.0.1:{port}/api"
    try:
        started = time.perf_counter()
        while True:
            assert proc.poll() is None, f"server exited:\n{_tail(log)}"
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.perf_counter() - started < 180, f"no /api/health:\n{_tail(log)}"
            time.sleep(1)
        print(f"server healthy on {api} after {time.perf_counter() - started:.1f}s")
        client_env = {k: v for k, v in env.items() if k != "PREFECT_HOME"}
        client_env["PREFECT_API_URL"] = api
        yield api, client_env
    finally:
        _stop(proc)


def _wait_done(api: str, run_id: str, logs: list[Path]) -> dict:
    started = time.perf_counter()
    while time.perf_counter() - started < RUN_TIMEOUT_S:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert run["state"]["type"] == "COMPLETED", (
                run["state"], "\n".join(_tail(p) for p in logs))
            print(f"flow run {run['name']} COMPLETED after {time.perf_counter() - started:.1f}s")
            return run
        time.sleep(2)
    pytest.fail(f"flow run {run_id} not done in {RUN_TIMEOUT_S}s:\n"
                + "\n".join(_tail(p) for p in logs))


def _deployment(api: str, name: str) -> dict:
    response = httpx.get(f"{api}/deployments/name/retrain/{name}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _trigger(api: str, deployment_id: str) -> str:
    response = httpx.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={},
                          timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)
    return response.json()["id"]


def _scheduled_runs(api: str, deployment_id: str, wait_s: float = 90) -> list[dict]:
    """The runs the server's scheduler made for the deployment's cron, waiting for its loop
    (it schedules a new or changed deployment within seconds; 90 s is generous)."""
    deadline = time.perf_counter() + wait_s
    while True:
        runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
            "flow_runs": {"deployment_id": {"any_": [deployment_id]},
                          "state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
        auto = [r for r in runs if r.get("auto_scheduled")]
        if auto or time.perf_counter() > deadline:
            return auto
        time.sleep(2)


def _limit(deployment: dict) -> int | None:
    # The response's `concurrency_limit` is always None; the limit lives here.
    return (deployment.get("global_concurrency_limit") or {}).get("limit")


def _champion(project: Path, name: str) -> tuple[int, str | None]:
    """(number of registered versions, champion version) from the project's sqlite store."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name='{name}'")
    return len(versions), str(client.get_model_version_by_alias(name, "champion").version)


def _code(project: Path) -> dict[str, str]:
    """The code digest of every step for the toy datasets' task (what their cache keys hold)."""
    task = load_config("toy", project).task
    return {step: code_digest(task, step) for step in STEPS}


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.slow
def test_deployments_on_a_real_server(server, project: Path, tiny_bert: Path, tmp_path: Path):
    api, env = server
    started = time.perf_counter()
    # Step caches are keyed by the code digest: edits to tunesmith/ or tasks/ while this
    # runs (a shared working tree) legitimately re-run steps, so reuse is asserted only
    # when the code did not change.
    prefect = str(BIN / "prefect")
    write_csv(project / "data" / "toy.csv", make_rows(ROWS))
    write_dataset_yaml(project, "toy", base=str(tiny_bert), extra=FAST)
    code = _code(project)
    # The repo's prefect.yaml, its one deployment pointed at this project's dataset.
    text = (REPO / "prefect.yaml").read_text(encoding="utf-8")
    (project / "prefect.yaml").write_text(text.replace("sms_spam", "toy"), encoding="utf-8")

    # (a) process work pool: deploy from prefect.yaml, trigger, one worker poll runs it.
    _cli([prefect, "work-pool", "create", "tunesmith-process", "--type", "process"], env, project)
    _cli([prefect, "--no-prompt", "deploy", "--all"], {**env, "TUNESMITH_ROOT": str(project)},
         project)
    deployed = _deployment(api, "retrain-toy")
    assert _limit(deployed) == 1 and deployed["work_pool_name"] == "tunesmith-process"
    out = _cli([prefect, "deployment", "run", "retrain/retrain-toy"], env, project)
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    worker_log = tmp_path / "worker.log"
    # Not TUNESMITH_ROOT: the deployment's pull step must put the run in the project.
    worker = _start([prefect, "worker", "start", "--pool", "tunesmith-process", "--run-once"],
                    worker_log, env, tmp_path)
    try:
        _wait_done(api, run_id, [worker_log])
        worker.wait(timeout=60)
    finally:
        _stop(worker)
    assert _champion(project, "toy") == (1, "1")
    # The worker's run cached its steps where `tunesmith run` looks (prefect.yaml's env).
    stored = {p.name.rsplit("-", 1)[0] for p in (project / ".prefect" / "storage").glob("toy-*")}
    assert stored == {f"toy-{step}" for step in ("ingest", "clean", "validate", "tokenize",
                                                 "train", "evaluate", "register")}

    # `tunesmith run` with PREFECT_API_URL: runs against the server (no deployment), and
    # reuses the steps the worker's run stored, so nothing is retrained or re-registered.
    out = _cli([str(BIN / "tunesmith"), "run", "--dataset", "toy"], env, project)
    assert "toy: completed" in out and "Traceback" not in out, out
    print(next(line for line in out.splitlines() if line.startswith("toy: ")))
    if _code(project) == code:
        assert "ran nothing" in out, out
        assert _champion(project, "toy") == (1, "1")
    else:
        print("code changed during the test: cache reuse not checked")
    runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
        "flow_runs": {"deployment_id": {"is_null_": True}}}).json()
    assert [(r["parameters"]["dataset"], r["state"]["type"]) for r in runs] == [
        ("toy", "COMPLETED")]

    # (b) `tunesmith serve`: one deployment per dataset on its YAML's cron, limit 1 each.
    write_csv(project / "data" / "toy2.csv", make_rows(ROWS, seed=1))
    write_dataset_yaml(project, "toy2", base=str(tiny_bert),
                       extra=FAST + 'schedule: "30 3 * * 1"\n')
    serve_log = tmp_path / "serve.log"
    serve = _start([str(BIN / "tunesmith"), "serve"], serve_log, env, project)
    try:
        deadline = time.perf_counter() + 180  # serve registers toy, then toy2, then polls
        while httpx.get(f"{api}/deployments/name/retrain/retrain-toy2", timeout=10).is_error:
            assert serve.poll() is None and time.perf_counter() < deadline, _tail(serve_log)
            time.sleep(2)
        for name, cron in (("retrain-toy", "0 2 * * *"), ("retrain-toy2", "30 3 * * 1")):
            served = _deployment(api, name)
            assert [s["schedule"]["cron"] for s in served["schedules"]] == [cron]
            assert _limit(served) == 1
        toy2 = _deployment(api, "retrain-toy2")["id"]
        # The server's scheduler puts the cron's next runs in the queue: what makes a
        # scheduled retrain happen at all (SQLAlchemy 2.1 broke it in Prefect 3.8.8's
        # scheduler, "Can't evaluate bulk DML statement", so constraints.txt holds 2.0).
        assert _scheduled_runs(api, toy2), _tail(tmp_path / "server.log")
        # Two triggers at once: the deployment's concurrency limit makes the second wait
        # for the first. (Were they run together, the flock would skip the second.)
        ids = [_trigger(api, toy2) for _ in range(2)]
        first, second = sorted((_wait_done(api, i, [serve_log]) for i in ids),
                               key=lambda r: r["start_time"])
        assert _when(first["end_time"]) <= _when(second["start_time"]), (first, second)
        states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": second["id"]},
                           timeout=10).json()
        print("second run's states:", " -> ".join(s["name"] for s in states))
        for line in serve_log.read_text(errors="replace").splitlines():
            if "toy2: ran" in line:
                print(line[line.index("toy2: ran"):])
        assert "skipping this one" not in serve_log.read_text(errors="replace")
    finally:
        _stop(serve)
    if _code(project) == code:
        assert _champion(project, "toy2") == (1, "1")  # the second run reused the first's
    else:
        assert _champion(project, "toy2")[1] is not None
    print(f"whole test: {time.perf_counter() - started:.1f}s")
