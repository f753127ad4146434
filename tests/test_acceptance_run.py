"""Acceptance: the README's quick start and everyday commands on a copy of the repository as
shipped, through the real CLI, on the named bases (tests/acceptance.py says how).

One project for the module, in the order a newcomer goes: run each shipped dataset, ask its
champion, move the champion by hand, tune, run everything again (a no-op), inspect the run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from acceptance import (
    BIN,
    TINY,
    champion,
    clean_console,
    cli,
    free_port,
    ok,
    registry,
    shipped_copy,
    user_env,
    wait_http,
)

from tunesmith.config import dataset_names

SET_TINY = [a for pair in TINY for a in ("--set", pair)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return shipped_copy(tmp_path_factory.mktemp("shipped"))


def test_every_shipped_dataset_resolves_and_lists(project: Path):
    """`tunesmith resolve` (dvc.yaml's first stage) for every dataset, `dataset list`, and
    `dvc-yaml --check` on the committed dvc.yaml, as on a fresh clone."""
    names = dataset_names(project)
    assert {"sms_spam", "assistant", "shapes"} <= set(names)
    for name in names:
        out = ok(cli(project, "resolve", "--dataset", name)).stdout
        assert f"{name}: config valid; inputs of 7 steps" in out
    listed = ok(cli(project, "dataset", "list")).stdout
    assert all(name in listed for name in names)
    assert "is current" in ok(cli(project, "dvc-yaml", "--check")).stdout


def test_quick_start_runs_sms_spam_and_the_champion_answers(project: Path):
    """The quick start's `tunesmith run --dataset sms_spam` (what `make demo` runs), then
    `predict` on the registered champion and `mlflow ui` showing it."""
    run = ok(cli(project, "run", "--dataset", "sms_spam", *SET_TINY))
    out = run.stdout
    assert "sms_spam: completed; ran ingest, clean, validate, tokenize, train, evaluate, " \
           "register" in out
    clean_console(run)
    assert champion(project, "sms_spam") is not None
    answer = ok(cli(project, "predict", "--dataset", "sms_spam",
                    "WINNER! Claim your free prize now, text WIN to 80086")).stdout
    label = answer.split("\t")[0]
    assert label in ("ham", "spam"), answer
    texts = project / "texts.csv"
    texts.write_text('text\nSee you at lunch?\n"URGENT: your account is locked, click here"\n')
    table = ok(cli(project, "predict", "--dataset", "sms_spam", "--input", str(texts),
                   "--output", str(project / "preds.csv"))).stderr
    assert "wrote 2 predictions" in table

    port = free_port()
    ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri",
                           "sqlite:///mlflow.db", "--port", str(port)], cwd=project,
                          env=user_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        import httpx

        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health", timeout_s=120)
        got = httpx.get(base + "/api/2.0/mlflow/registered-models/get",
                        params={"name": "sms_spam"}, timeout=10).json()
        aliases = {a["alias"] for a in got["registered_model"].get("aliases", [])}
        assert {"champion", "challenger"} <= aliases
    finally:
        import os
        import signal

        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_show_mlflow_run_lists_the_pipeline_run(project: Path):
    """`python scripts/show_mlflow_run.py --dataset NAME` on the quick start's run."""
    out = ok(cli(project, "scripts/show_mlflow_run.py", "--dataset", "sms_spam",
                 program="python")).stdout
    assert "git.commit" in out or "params" in out.lower()
    assert "gate.decision" in out


def test_the_readme_llm_command_trains_smollm2_and_answers(project: Path):
    """`tunesmith run --dataset assistant` (LoRA on SmolLM2-135M-Instruct, converted once),
    then `predict` asks the champion the README's question. This failed on a fresh clone:
    preflight asked the tokenizer-only folder for the model's config.json."""
    run = ok(cli(project, "run", "--dataset", "assistant", *SET_TINY))
    assert "assistant: completed" in run.stdout and "perplexity on test" in run.stdout
    clean_console(run)
    answer = ok(cli(project, "predict", "--dataset", "assistant",
                    "What is the capital of Kenya?", "--max-new-tokens", "16")).stdout
    assert answer.strip() and answer.rstrip().endswith("What is the capital of Kenya?")
    assert len(answer.split("\t")[0].strip()) > 0  # an answer before the prompt


def test_the_image_dataset_runs_and_predicts_a_folder(project: Path):
    run = ok(cli(project, "run", "--dataset", "shapes", *SET_TINY))
    assert "shapes: completed" in run.stdout
    clean_console(run)
    version = champion(project, "shapes")
    alias = "champion" if version else "challenger"  # two steps may not pass its 0.8 gate
    folder = project / "data" / "samples" / "shapes" / "vertical"
    answer = ok(cli(project, "predict", "--dataset", "shapes", "--alias", alias,
                    str(folder))).stdout.splitlines()
    assert len(answer) == len(list(folder.glob("*.png")))
    assert {line.split("\t")[0] for line in answer} <= {"horizontal", "vertical"}


def test_promote_and_rollback_move_the_champion(project: Path):
    versions = sorted(int(v.version) for v in registry(project).search_model_versions(
        "name='sms_spam'"))
    assert len(versions) >= 2  # the fine-tuned model and the TF-IDF baseline
    first, last = versions[0], versions[-1]
    before = champion(project, "sms_spam")
    other = first if before != first else last
    out = ok(cli(project, "promote", "--dataset", "sms_spam", "--version", str(other),
                 "--note", "acceptance")).stdout
    assert f"champion -> version {other}" in out and champion(project, "sms_spam") == other
    ok(cli(project, "rollback", "--dataset", "sms_spam", "--version", str(before)))
    assert champion(project, "sms_spam") == before
    tags = registry(project).get_model_version("sms_spam", str(before)).tags
    assert any("rollback" in k or "rollback" in str(v) for k, v in tags.items())


def test_tune_two_trials_prints_and_writes_the_choice(project: Path):
    """`tunesmith tune --trials 2` (each trial two steps here), then `--write`: the best rate
    goes into datasets/sms_spam.yaml, whose comments stay."""
    import re

    import yaml

    path = project / "datasets" / "sms_spam.yaml"
    shipped = path.read_text()
    written = ok(cli(project, "tune", "--dataset", "sms_spam", "--trials", "2", "--write",
                     *SET_TINY, timeout=1200)).stdout
    assert written.count("  trial ") == 2 and "wrote train.lr into" in written
    best = float(re.search(r"best val \S+ \S+ \(.*\): train\.lr=(\S+)", written).group(1))
    assert yaml.safe_load(path.read_text())["train"]["lr"] == pytest.approx(best, rel=1e-3)
    assert path.read_text().startswith(shipped.splitlines()[0])  # the comment header kept
    path.write_text(shipped)  # the later tests run the shipped settings


def test_run_all_again_reuses_every_step(project: Path):
    """`tunesmith run --all` after the runs above: nothing changed, so every step of every
    dataset is reused (the no-op run) and no new version is registered."""
    before = {n: len(registry(project).search_model_versions(f"name='{n}'"))
              for n in ("sms_spam", "assistant", "shapes")}
    out = ok(cli(project, "run", "--all", *SET_TINY)).stdout
    for name in before:
        assert f"{name}: completed; ran nothing; reused ingest, clean, validate, tokenize, " \
               "train, evaluate, register" in out, out
    after = {n: len(registry(project).search_model_versions(f"name='{n}'")) for n in before}
    assert after == before


def test_processes_auto_trains_in_one_process_on_cpu(project: Path):
    """`--set train.processes=auto`: one worker per GPU, one process here."""
    out = ok(cli(project, "step", "train", "--dataset", "sms_spam", *SET_TINY,
                 "--set", "train.processes=auto"))
    assert "train sms_spam:" in out.stdout
    summary = json.loads((project / "models" / "sms_spam" / "train_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["steps"] == 2
