"""The step declarations and the task-type protocol: one declaration, every consumer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from tunesmith import steps, tasktypes
from tunesmith.config import load_config
from tunesmith.fingerprint import code_files, step_key
from tunesmith.steps import UndeclaredRead


def test_every_task_type_implements_the_whole_protocol():
    for name, module_name in tasktypes.MODULES.items():
        module = tasktypes.get(name)
        missing = [m for m in tasktypes.PROTOCOL if not hasattr(module, m)]
        assert not missing, f"{module_name} lacks {missing}"
        assert module.NAME == name
        for step in {*module.READS, *module.INPUTS}:
            assert step in steps.STEPS, f"{module_name}: READS/INPUTS for unknown step {step}"


def test_a_step_sees_only_what_it_declared(project: Path):
    cfg = load_config("toy", project)
    ingest = steps.view(cfg, "ingest")
    assert ingest.source.path == cfg.source.path and ingest.name == "toy"
    with pytest.raises(UndeclaredRead, match="step ingest reads config key 'train'"):
        _ = ingest.train
    with pytest.raises(UndeclaredRead, match="folder 'model'"):
        _ = ingest.dirs.model
    evaluate = steps.view(cfg, "evaluate")
    assert evaluate.register_.primary_metric == "f1_macro"  # one declared key of a section
    with pytest.raises(UndeclaredRead, match="'register.thresholds'"):
        _ = evaluate.register_.thresholds
    task = steps.task_of(evaluate, "evaluate")
    assert task.BASELINE == "TF-IDF+LR"  # constants are free
    with pytest.raises(UndeclaredRead, match="task function 'log_model'"):
        _ = task.log_model


def test_a_task_type_adds_what_it_reads_for_a_step(project: Path):
    text = load_config("toy", project)
    chat = load_config("toy", project,
                       ["task=causal-lm", "columns={prompt: text, response: label}"])
    assert "train.prompt_template" not in steps.reads(text.task, "tokenize")
    assert "train.prompt_template" in steps.reads(chat.task, "tokenize")
    assert steps.view(chat, "tokenize").train.prompt_template.endswith("### Response:\n")
    with pytest.raises(UndeclaredRead):
        _ = steps.view(text, "tokenize").train.prompt_template


def test_the_cache_key_follows_exactly_what_a_step_reads(project: Path):
    """The flow's keys from the declarations: a key a step reads changes its key, any other
    key does not (the source of the two stale-cache bugs the declarations fixed)."""
    from tunesmith.tasks.clean import clean
    from tunesmith.tasks.ingest import ingest

    cfg = load_config("toy", project)
    ingest(cfg)
    clean(cfg)
    keys = {s: step_key(cfg, s) for s in ("clean", "validate")}
    other = load_config("toy", project, ["register.primary_metric=accuracy", "train.lr=0.1"])
    assert {s: step_key(other, s) for s in keys} == keys
    stricter = load_config("toy", project, ["validate.min_rows=11"])
    assert step_key(stricter, "validate") != keys["validate"]
    assert step_key(stricter, "clean") == keys["clean"]
    # evaluate's inputs are missing here (no model): never cached rather than stale
    assert step_key(cfg, "evaluate") is None


def test_code_dependencies_are_the_modules_a_step_imports():
    train = code_files("text-classification", "train")
    assert "tunesmith/training/run.py" in train and "tasks/train.py" in train
    assert "tunesmith/tasktypes/text_classification.py" in train
    # The registry is imported by the task type's serving functions only: not training code.
    assert not any(f.startswith("tunesmith/registry/") for f in train)
    assert "tunesmith/registry/store.py" in code_files("text-classification", "register")
    assert "tunesmith/images/preprocess.py" in code_files("image-classification", "tokenize")
    assert "tunesmith/images/preprocess.py" not in code_files("text-classification", "tokenize")


def test_no_step_branches_on_the_task_type():
    """Task types are modules behind the protocol: only config validation and the task-type
    modules themselves may name a task type."""
    pattern = re.compile(r"\btask\s*[!=]=|[!=]=\s*\"(text-classification|causal-lm|"
                         r"image-classification)\"")
    allowed = {"tunesmith/config.py"}
    offenders = []
    for folder in ("tunesmith", "tasks", "flows"):
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel in allowed or rel.startswith("tunesmith/tasktypes/"):
                continue
            offenders += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                          if pattern.search(line)]
    assert offenders == []
