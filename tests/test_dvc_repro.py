"""A real `dvc repro` in a temporary git repository: runs everything, then nothing, then
only the stages of the dataset whose YAML changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_rows, write_csv, write_dataset_yaml

STAGES = ("ingest", "clean", "validate", "tokenize", "train", "evaluate", "register")


def _sh(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("TUNESMITH_ROOT", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


@pytest.fixture
def dvc_repo(tmp_path: Path, tiny_bert: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    for code_dir in ("tasks", "tunesmith"):  # dvc.yaml's code deps
        shutil.copytree(REPO / code_dir, repo / code_dir,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "datasets").mkdir()
    (repo / "data").mkdir()
    params = (repo / "params.yaml").read_text()
    params = re.sub(r"datasets:\n(  .*\n)+",
                    "datasets:\n  toy: {source: data/toy.csv}\n  toy2: {source: data/toy2.csv}\n",
                    params)
    (repo / "params.yaml").write_text(params)
    for i, name in enumerate(("toy", "toy2")):
        write_csv(repo / "data" / f"{name}.csv", make_rows(60, seed=i))
        write_dataset_yaml(repo, name, base=str(tiny_bert),
                           extra="train: {epochs: 1, batch_size: 16}\nevaluate: {latency_examples: 2}\n")
    _sh(["git", "init", "-q"], repo)
    _sh(["dvc", "init", "-q"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-qm", "init"], repo)
    return repo


def test_dvc_repro_runs_all_then_nothing_then_one_dataset(dvc_repo: Path):
    first = _ran(_sh(["dvc", "repro"], dvc_repo))
    assert first == {f"{s}@{d}" for s in STAGES for d in ("toy", "toy2")}
    assert (dvc_repo / "reports" / "toy" / "eval" / "metrics.json").is_file()
    assert (dvc_repo / "dvc.lock").is_file()

    assert _ran(_sh(["dvc", "repro"], dvc_repo)) == set()

    yaml_path = dvc_repo / "datasets" / "toy2.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("min_rows: 10", "min_rows: 12"))
    third = _ran(_sh(["dvc", "repro"], dvc_repo))
    assert third and all(stage.endswith("@toy2") for stage in third)
    assert "validate@toy2" in third
