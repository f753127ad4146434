"""The acceptance suite's tools: a copy of the repository as shipped, and the real CLI.

Acceptance tests (tests/test_acceptance_*.py) run the commands the README and the docs tell a
newcomer to run, as that newcomer would: the installed `tunesmith` (and `dvc`, `mlflow`)
executables in a subprocess, in a copy of this repository's files (its datasets, params.yaml,
dvc.yaml, sample data), on the named bases (MiniLM, SmolLM2, EfficientNet-Lite0; converted once
into the user's cache as a first run does). Budgets are small (`--set train.max_steps=2`);
nothing else is shrunk. `DOC_COMMANDS` in tests/test_acceptance_docs.py maps every documented
command to the test that runs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY = ("train.max_steps=2",)  # the budget: two optimizer steps, everything else as shipped


def shipped_files() -> list[str]:
    """The repository's files as a clone has them (tracked, plus new files git would add)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.split("\0") if p and (REPO / p).is_file())


def shipped_copy(dest: Path, git: bool = False) -> Path:
    """`dest` holding the repository as shipped (mtimes kept, so make sees the same ages);
    `git`: also a git repository with one commit, as a clone is (DVC needs one)."""
    for rel in shipped_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "as shipped"]):
            subprocess.run(["git", *cmd], cwd=dest, env=env, check=True)
    return dest


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell has: none of the test process's project settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNESMITH_ROOT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                        "PREFECT_API_URL", "PYTEST_CURRENT_TEST", "TUNESMITH_KILL_AT",
                        "TUNESMITH_FAIL_AT", "TUNESMITH_PAUSE_AT")}
    # What the Makefile exports for `make demo`; tunesmith sets the same defaults itself.
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    return env | extra


def cli(root: Path, *args: str, timeout: int = 900, env: dict[str, str] | None = None,
        program: str = "tunesmith") -> subprocess.CompletedProcess:
    """`program args...` in `root`, as typed in a shell there; output captured as text."""
    return subprocess.run([str(BIN / program), *args], cwd=root, env=env or user_env(),
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`result`, asserting it exited 0 (the end of its output in the failure message)."""
    assert result.returncode == 0, (result.args, result.stdout[-3000:], result.stderr[-3000:])
    return result


# Lines a run must not print: progress-bar redraws off a terminal, and warnings the user can
# do nothing about (each was on every run of its kind).
NOISE = ("\r", "it/s]", "is_gradient_checkpointing", "incompatible to the `id2label`",
         "Downloading artifacts", "py.warnings", "[transformers]")


def clean_console(result: subprocess.CompletedProcess) -> None:
    """`result` printed none of NOISE (its stdout and stderr are not a terminal)."""
    said = result.stdout + result.stderr
    found = [n for n in NOISE if n in said]
    assert not found, (found, said[-3000:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    """Until `url` answers (any status): a server started in the background is up."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def registry(root: Path):
    """An MlflowClient on the project's default store (`tracking.uri`, sqlite:///mlflow.db)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(uri, uri)


def champion(root: Path, name: str) -> int | None:
    try:
        return int(registry(root).get_model_version_by_alias(name, "champion").version)
    except Exception:  # noqa: BLE001 - MLflow raises its own error for an unset alias
        return None
