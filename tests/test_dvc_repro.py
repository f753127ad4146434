"""A real `dvc repro` in a temporary git repository: everything, then nothing, then exactly
the stages that read what changed (the step declarations, tunesmith/steps.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_rows, write_csv
from dvc_helpers import STEPS, make_dvc_repo, ran, sh, stages

TEXT_YAML = """source: {{path: data/{name}.csv}}
columns: {{text: text, label: label}}
labels: [neg, pos]
validate: {{min_rows: 10, min_class_share: 0.2, max_label_drift: 0.3}}
model: {{base: {base}}}
tokenize: {{max_length: 32}}
train: {{epochs: 1, batch_size: 16, lr: 5.0e-3}}
evaluate: {{latency_examples: 2}}
"""
CHAT_YAML = """task: causal-lm
source: {path: data/chat.csv}
columns: {prompt: text, response: label}
validate: {min_rows: 10}
model: {base: %s}
tokenize: {max_length: 128}
"""


def _rows(seed: int):
    return lambda path: write_csv(path, make_rows(60, seed=seed))


def test_dvc_repro_runs_all_then_nothing_then_only_what_reads_the_change(tmp_path: Path,
                                                                          tiny_bert: Path):
    """toy's whole chain and toy2's data stages (a second dataset shows a change stays in
    its own stages; its train/evaluate/register would add 4 stage processes, ~10 s each,
    to a suite that has 20 minutes)."""
    repo = make_dvc_repo(
        tmp_path / "repo",
        {name: TEXT_YAML.format(name=name, base=tiny_bert) for name in ("toy", "toy2")},
        {"toy": _rows(0), "toy2": _rows(1)})
    targets = ["toy-register", "toy2-validate"]
    first = ran(sh(["dvc", "repro", *targets], repo))
    assert first == stages("toy", ("inputs", *STEPS)) | stages(
        "toy2", ("inputs", "ingest", "clean", "validate"))
    assert (repo / "reports" / "toy" / "eval" / "metrics.json").is_file()
    assert (repo / "dvc.lock").is_file()

    assert ran(sh(["dvc", "repro", *targets], repo)) == set()

    # One validate key of one dataset: its inputs and validate stages; the verdict (passed,
    # same data) is unchanged, so nothing after it would run.
    yaml_path = repo / "datasets" / "toy2.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("min_rows: 10", "min_rows: 12"))
    assert ran(sh(["dvc", "repro", *targets], repo)) == stages("toy2", ("inputs", "validate"))

    # register.primary_metric is read by evaluate (the baseline comparison) and register:
    # both re-run, training does not (regression: evaluate used to miss it). toy2's inputs
    # stage re-runs (params.yaml changed) and finds its validate inputs the same.
    params = repo / "params.yaml"
    text = params.read_text()
    assert "  primary_metric: null" in text
    params.write_text(text.replace("  primary_metric: null", "  primary_metric: accuracy"))
    assert ran(sh(["dvc", "repro", *targets], repo)) == (
        stages("toy", ("inputs", "evaluate", "register")) | {"toy2-inputs"})


def test_prompt_template_reaches_causal_tokenize_only(tmp_path: Path, tiny_bert: Path,
                                                     tiny_gpt2: Path):
    """Regression: causal-LM tokenize reads train.prompt_template; `dvc repro` used to keep
    the stale tokens. A text dataset's tokenize does not read it: its inputs file, the
    stage's dependency, stays byte for byte (the first test shows DVC then keeps a stage)."""
    repo = make_dvc_repo(
        tmp_path / "repo",
        {"chat": CHAT_YAML % tiny_gpt2, "toy": TEXT_YAML.format(name="toy", base=tiny_bert)},
        {"chat": _rows(2), "toy": _rows(0)})
    targets = ["chat-tokenize", "toy-inputs"]
    assert ran(sh(["dvc", "repro", *targets], repo)) == stages(
        "chat", ("inputs", "ingest", "clean", "validate", "tokenize")) | {"toy-inputs"}
    before = (repo / "data" / "tokenized" / "chat" / "train").stat().st_mtime_ns
    toy_tokenize = repo / ".tunesmith" / "toy" / "inputs" / "tokenize.json"
    toy_inputs = toy_tokenize.read_bytes()
    params = repo / "params.yaml"
    text = params.read_text()
    assert "prompt_template:" in text
    params.write_text(text.replace("### Response:", "### Answer:"))
    # validate reads it too (the truncated share it bounds depends on the template)
    assert ran(sh(["dvc", "repro", *targets], repo)) == stages(
        "chat", ("inputs", "validate", "tokenize")) | {"toy-inputs"}
    assert (repo / "data" / "tokenized" / "chat" / "train").stat().st_mtime_ns != before
    assert toy_tokenize.read_bytes() == toy_inputs


def test_a_bad_config_fails_at_the_first_stage_in_one_line(tmp_path: Path, tiny_bert: Path):
    repo = make_dvc_repo(tmp_path / "repo", {"toy": TEXT_YAML.format(name="toy", base=tiny_bert)},
                         {"toy": _rows(0)})
    path = repo / "datasets" / "toy.yaml"
    path.write_text(path.read_text() + "train: {methd: lora}\n")  # a typo
    out = sh(["dvc", "repro"], repo, ok=False)
    assert ran(out) == {"toy-inputs"}  # nothing ran past the config check
    assert "error: " in out and "datasets/toy.yaml: train.methd: unknown key" in out
    # A number out of its range (params.yaml, where `dvc exp run -S` writes) stops there too.
    path.write_text(path.read_text().replace("train: {methd: lora}\n", ""))
    params = repo / "params.yaml"
    text = params.read_text()
    assert "  warmup_ratio: 0.06\n" in text
    params.write_text(text.replace("  warmup_ratio: 0.06\n", "  warmup_ratio: 1.5\n", 1))
    out = sh(["dvc", "repro"], repo, ok=False)
    assert ran(out) == {"toy-inputs"}
    assert "params.yaml: train.warmup_ratio: must be in [0, 1), got 1.5" in out


def test_a_moved_source_asks_for_dvc_yaml(tmp_path: Path, tiny_bert: Path):
    """The source lives in datasets/NAME.yaml only: pointing it elsewhere without
    regenerating dvc.yaml stops at NAME-inputs, saying what to run."""
    repo = make_dvc_repo(tmp_path / "repo", {"toy": TEXT_YAML.format(name="toy", base=tiny_bert)},
                         {"toy": _rows(0)})
    write_csv(repo / "data" / "moved.csv", make_rows(60))
    path = repo / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("data/toy.csv", "data/moved.csv"))
    out = sh(["dvc", "repro"], repo, ok=False)
    assert "stage toy-ingest is out of date" in out and "tunesmith dvc-yaml" in out
    sh(["tunesmith", "dvc-yaml"], repo)
    assert ran(sh(["dvc", "repro", "toy-ingest"], repo)) == stages("toy", ("inputs", "ingest"))
    assert "data/moved.csv" in (repo / "data" / "raw" / "toy" / "manifest.json").read_text()


@pytest.mark.slow  # a whole dvc repro with a launched 2-process training: ~2 min
def test_dvc_repro_trains_in_two_launched_processes(tmp_path: Path, tiny_bert: Path):
    text = TEXT_YAML.format(name="toy", base=tiny_bert).replace(
        "train: {epochs: 1, batch_size: 16, lr: 5.0e-3}",
        "train: {epochs: 1, batch_size: 8, lr: 5.0e-3, processes: 2}")
    repo = make_dvc_repo(tmp_path / "repo", {"toy": text}, {"toy": _rows(0)})
    assert stages("toy", STEPS) <= ran(sh(["dvc", "repro"], repo))
    summary = json.loads((repo / "models" / "toy" / "train_summary.json").read_text())
    assert summary["world_size"] == 2
