"""Acceptance, slow tier (`make test-slow`): the documented commands that take minutes, on a
copy of the repository as shipped and the named bases: `make demo` and the README's LLM
command at their full defaults, `tunesmith serve`, two nodes joining one training run, and
the UI checks (headless Chromium, when installed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from acceptance import (
    BIN,
    REPO,
    TINY,
    champion,
    clean_console,
    cli,
    free_port,
    ok,
    shipped_copy,
    user_env,
)

pytestmark = pytest.mark.slow
SET_TINY = [a for pair in TINY for a in ("--set", pair)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = shipped_copy(tmp_path_factory.mktemp("shipped-slow"))
    # `make demo` reuses the checkout's .venv (its mtime is newer than pyproject.toml's, as in
    # a clone after `make setup`), so the target runs the demo and not a second install.
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def test_make_demo_registers_the_sms_spam_champion(project: Path):
    """The quick start's first command, at its full defaults (4 epochs of MiniLM)."""
    result = subprocess.run(["make", "demo"], cwd=project, env=user_env(), capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pip install" not in result.stdout  # the setup target was already done
    assert "sms_spam: completed" in result.stdout
    assert champion(project, "sms_spam") is not None
    clean_console(result)


# Two epochs at the defaults: 265 s alone here, but over the suite's 15-minute cap when the
# machine is shared (2026-12-07: killed at 900 s while training beside another suite).
@pytest.mark.timeout(3600)
def test_the_readme_llm_command_at_its_defaults(project: Path):
    """`tunesmith run --dataset assistant` as the README gives it (2 epochs of LoRA on the
    320 bundled rows), then the README's question to the champion."""
    run = ok(cli(project, "run", "--dataset", "assistant", timeout=3600))
    assert "assistant: completed" in run.stdout and "PROMOTED" in run.stdout, run.stdout[-2000:]
    clean_console(run)
    summary = json.loads((project / "models" / "assistant" / "train_summary.json").read_text())
    assert summary["peak_memory_mb"] < 4096, summary["peak_memory_mb"]
    answer = ok(cli(project, "predict", "--dataset", "assistant",
                    "What is the capital of Kenya?")).stdout
    # An answer in the data's style (one short sentence). Not asserted: that it is right. At
    # these defaults the 135M model answered "Kenia." or "KIC." (2026-12-06), the facts of
    # the untuned base lost to the style; the gate passes on perplexity (1.6 vs 4.5).
    response = answer.split("\t")[0].strip()
    assert 0 < len(response) < 80 and response.endswith("."), answer


def test_two_nodes_join_one_training_run(project: Path):
    """README: `PET_NODE_RANK=1 tunesmith step train --dataset NAME --set train.nodes=2 --set
    train.rdzv_endpoint=HOST:PORT` joins node 0's run (both nodes on this machine)."""
    for step in ("ingest", "clean", "validate", "tokenize"):
        ok(cli(project, "step", step, "--dataset", "sms_spam"))
    sets = ["--set", "train.nodes=2", "--set", f"train.rdzv_endpoint=127.0.0.1:{free_port()}",
            *SET_TINY]
    node1 = subprocess.Popen([str(BIN / "tunesmith"), "step", "train", "--dataset", "sms_spam",
                              *sets], cwd=project, env=user_env(PET_NODE_RANK="1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node0 = cli(project, "step", "train", "--dataset", "sms_spam", *sets,
                env=user_env(PET_NODE_RANK="0"), timeout=1200)
    out1, err1 = node1.communicate(timeout=600)
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, err1[-3000:]
    assert "outputs=written by node 0" in out1, out1
    summary = json.loads((project / "models" / "sms_spam" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2


def test_serve_schedules_one_deployment_per_dataset(project: Path):
    """`tunesmith serve` (a temporary API in a session of its own): it names a deployment
    per dataset, each on its YAML's cron, and stops cleanly on Ctrl-C."""
    log = project / "serve.log"
    with log.open("w") as fh:
        # SIGINT as a terminal has it: a job started with `&` by a non-interactive shell
        # (a CI script, nohup) inherits SIGINT ignored, and serve then never hears Ctrl-C.
        proc = subprocess.Popen([str(BIN / "tunesmith"), "serve"], cwd=project,
                                env=user_env(PREFECT_HOME=str(project / ".prefect-serve")),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "retrain-shapes" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        text = log.read_text()
        for name in ("sms_spam", "assistant", "shapes"):
            assert f"retrain-{name}" in text, text[-3000:]
        served = len(text)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal's Ctrl-C sends: the whole group
        proc.wait(timeout=60)
    assert proc.returncode in (0, 130, -signal.SIGINT), log.read_text()[-2000:]
    # Its API server is in a session of its own: Ctrl-C left it up for serve to pause the
    # deployments. In the terminal's group, Ctrl-C raced serve's pause: sometimes a clean
    # stop (~14 s), sometimes the server died first and serve printed connection tracebacks
    # (2 of 6 slow runs, 2026-12-07).
    after = log.read_text()[served:]
    assert "Traceback" not in after and "ConnectError" not in after, after[-2000:]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium not installed (apt-get install -y chromium)")
def test_the_mlflow_ui_check_script(project: Path):
    """README: `python scripts/check_mlflow_ui.py --root DIR --dataset NAME`."""
    if champion(project, "sms_spam") is None:
        ok(cli(project, "run", "--dataset", "sms_spam", *SET_TINY))
    out = ok(cli(project, "scripts/check_mlflow_ui.py", "--root", str(project), "--dataset",
                 "sms_spam", program="python", timeout=600))
    assert "champion" in out.stdout
