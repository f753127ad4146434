"""A temporary git + DVC repository holding a copy of the project's code, for real `dvc repro`.

The repository gets the project's params.yaml (edited as a test needs), its code (tasks/,
tunesmith/: dvc.yaml lists their files as deps), tiny datasets, and a dvc.yaml generated
by `tunesmith dvc-yaml` there, as a team's checkout would have.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import REPO

STEPS = ("ingest", "clean", "validate", "tokenize", "train", "evaluate", "register")


def env() -> dict[str, str]:
    out = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
    for key in ("TUNESMITH_ROOT", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        out.pop(key, None)
    return out


def sh(args: list[str], cwd: Path, ok: bool = True, timeout: int = 900) -> str:
    done = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    if ok:
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def ran(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


def stages(dataset: str, steps=STEPS) -> set[str]:
    return {f"{dataset}-{s}" for s in steps}


def make_dvc_repo(repo: Path, datasets: dict[str, str], data: dict[str, Callable[[Path], None]],
                  params: Callable[[str], str] = lambda text: text) -> Path:
    """`datasets`: name -> dataset YAML text; `data`: name -> writer of data/<name>.csv;
    `params`: an edit of params.yaml's text. Committed, with dvc.yaml generated."""
    (repo / "datasets").mkdir(parents=True)
    (repo / "data").mkdir()
    for name in ("params.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    (repo / "params.yaml").write_text(params((repo / "params.yaml").read_text()))
    for code_dir in ("tasks", "tunesmith"):  # dvc.yaml's code deps
        shutil.copytree(REPO / code_dir, repo / code_dir,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in datasets.items():
        (repo / "datasets" / f"{name}.yaml").write_text(text)
        data[name](repo / "data" / f"{name}.csv")
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's remote
    sh(["tunesmith", "dvc-yaml"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    return repo
