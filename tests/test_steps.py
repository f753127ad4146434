"""The step declarations and the task-type protocol: one declaration, every consumer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from tunesmith import objectives, steps
from tunesmith.config import load_config
from tunesmith.fingerprint import code_files, step_key
from tunesmith.steps import UndeclaredRead


def test_every_task_type_implements_the_whole_protocol():
    for name, module_name in objectives.MODULES.items():
        module = objectives.get(name)
        missing = [m for m in objectives.PROTOCOL if not hasattr(module, m)]
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
    assert "tunesmith/objectives/text_classification/__init__.py" in train
    # The registry is imported by the task type's serving functions only: not training code.
    assert not any(f.startswith("tunesmith/registry/") for f in train)
    assert "tunesmith/registry/store.py" in code_files("text-classification", "register")
    # The files MLflow logs as a model's code are never imported (served models run without
    # tunesmith), yet a change to one must register again: they count where they are logged.
    for task, served in (("text-classification", "text_classification/served.py"),
                         ("image-classification", "image_classification/served.py"),
                         ("image-classification", "classification/served_baseline.py")):
        served = f"tunesmith/objectives/{served}"
        assert served in code_files(task, "register"), (task, served)
        assert served not in code_files(task, "train"), (task, served)
    preprocess = "tunesmith/objectives/image_classification/preprocess.py"
    assert preprocess in code_files("image-classification", "tokenize")
    assert preprocess not in code_files("text-classification", "tokenize")
    # A submodule of a task package runs the package's top level, not its functions: the
    # image tokenize step (the package's preprocess.py) and causal-LM training (its
    # training.py) do not depend on the registry the packages' serving functions import.
    for task, step in (("image-classification", "tokenize"), ("causal-lm", "train")):
        files = code_files(task, step)
        assert not any(f.startswith(("tunesmith/registry/", "tunesmith/validation/"))
                       for f in files), (task, step)
    # The functions text and image share (objectives/classification) count where called.
    shared = "tunesmith/objectives/classification/__init__.py"
    assert shared in code_files("image-classification", "train")
    assert "tunesmith/training/metrics.py" in code_files("image-classification", "train")
    assert "tunesmith/training/metrics.py" not in code_files("image-classification", "ingest")


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
            if rel in allowed or rel.startswith("tunesmith/objectives/"):
                continue
            offenders += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                          if pattern.search(line)]
    assert offenders == []


def test_the_training_core_calls_only_the_training_half_of_the_protocol():
    """tunesmith/training runs on an accelerator machine: what it calls on a task type is
    `objectives.TrainingCore`, so that half is what a task must make work without pydantic."""
    import re

    called = set()
    for path in (REPO / "tunesmith" / "training").glob("*.py"):
        called |= set(re.findall(r"\btask\.([A-Za-z_]+)", path.read_text(encoding="utf-8")))
    assert called and called <= set(objectives.TRAINING_CORE), called - set(
        objectives.TRAINING_CORE)
