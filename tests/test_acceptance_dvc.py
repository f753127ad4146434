"""Acceptance: `dvc repro` of the shipped dvc.yaml in a git copy of the repository, on the
named bases, then the no-op rerun; the README's experiment and remote commands (slow).

The budget goes where `dvc repro` reads it: `train.max_steps: 2` in the copy's params.yaml
(no dataset YAML sets it, so every dataset trains two steps); nothing else is changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from acceptance import champion, cli, ok, registry, shipped_copy

from tunesmith.config import dataset_names


def _budgeted(root: Path, steps: int = 2) -> Path:
    params = root / "params.yaml"
    text = params.read_text()
    assert "  max_steps: -1 " in text
    params.write_text(text.replace("  max_steps: -1 ", f"  max_steps: {steps} ", 1))
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return _budgeted(shipped_copy(tmp_path_factory.mktemp("dvc-shipped"), git=True))


def dvc(root: Path, *args: str, timeout: int = 1500):
    return cli(root, *args, timeout=timeout, program="dvc")


def test_dvc_repro_runs_every_shipped_dataset_then_is_a_no_op(repo: Path):
    """The shipped dvc.yaml from a fresh clone (it stopped at assistant-inputs before), each
    stage `tunesmith step`, every dataset registered; the second `dvc repro` runs nothing."""
    out = ok(dvc(repo, "repro")).stdout
    names = dataset_names(repo)
    for name in names:
        assert f"Running stage '{name}-register'" in out, out[-3000:]
        metrics = json.loads((repo / "reports" / name / "eval" / "metrics.json").read_text())
        assert metrics, name
        assert registry(repo).search_model_versions(f"name='{name}'"), name
    assert champion(repo, "sms_spam") is not None and champion(repo, "assistant") is not None
    assert (repo / "dvc.lock").is_file()
    again = ok(dvc(repo, "repro", timeout=600)).stdout
    assert "Running stage" not in again and "up to date" in again, again


@pytest.mark.slow
def test_experiments_metrics_plots_and_the_local_remote(repo: Path):
    """README's DVC section: `dvc exp run -S`, `dvc exp show`, `dvc metrics diff`, `dvc plots
    diff`, `dvc push` / `dvc pull` on the default local remote."""
    import shutil

    if not (repo / "dvc.lock").is_file():
        ok(dvc(repo, "repro"))
    env_git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    import subprocess

    subprocess.run([*env_git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*env_git, "commit", "-qm", "repro"], cwd=repo, check=True)
    versions = len(registry(repo).search_model_versions("name='sms_spam'"))
    exp = ok(dvc(repo, "exp", "run", "-S", "train.max_steps=3")).stdout
    assert "Running stage 'sms_spam-train'" in exp
    assert len(registry(repo).search_model_versions("name='sms_spam'")) > versions
    ok(dvc(repo, "exp", "show", "--no-pager"))  # the table, as typed (off a terminal its
    # columns shrink to "…"); the same rows as CSV to read them:
    shown = ok(dvc(repo, "exp", "show", "--no-pager", "--csv")).stdout
    assert "train.max_steps" in shown.splitlines()[0] and ",3," in shown, shown[-2000:]
    diff = ok(dvc(repo, "metrics", "diff", "HEAD")).stdout
    assert "metrics.json" in diff
    plots = ok(dvc(repo, "plots", "diff", "HEAD", "-o", str(repo / "plots-out")))
    assert (repo / "plots-out" / "index.html").is_file(), plots.stdout
    ok(dvc(repo, "push"))
    assert any((repo / "dvc-remote").rglob("*"))
    shutil.rmtree(repo / "models")
    ok(dvc(repo, "pull"))
    assert (repo / "models" / "sms_spam" / "train_summary.json").is_file()
