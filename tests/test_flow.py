"""The retrain flow under Prefect's test harness, with real MLflow (SQLite in tmp_path)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_rows, write_csv, write_dataset_yaml

from tunesmith.steps import STEPS

# TF-IDF aces toy data: no baseline rule, and the baseline does not compete. The tiny BERT
# must learn, or the collapse rule rightly refuses it: one epoch left it predicting one class
# (val F1 0.33), and so did batch 16 with early stopping after 3 flat epochs; registry_helpers'
# setting (280 rows, batch 8, 6 epochs at 1e-3, patience 5) learns it, ~3 s.
FAST = ("train: {epochs: 6, lr: 1.0e-3, batch_size: 8, early_stopping_patience: 5}\n"
        "evaluate: {latency_examples: 2}\n"
        "register: {require_beat_baseline: false, baseline_can_win: false}\n")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Step results (the cache) in a temp folder, not the user's ~/.prefect/storage.
    storage = tmp_path_factory.mktemp("prefect-storage")
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        yield storage


@pytest.fixture
def flow_project(project: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_csv(project / "data" / "toy.csv", make_rows(280))
    write_dataset_yaml(project, "toy", base=str(tiny_bert), extra=FAST)
    monkeypatch.setenv("TUNESMITH_ROOT", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def _versions(project: Path, name: str):
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    # registry_uri too: it otherwise follows the process-wide URI a previous test set.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception:  # noqa: BLE001 - no registered model yet
        return [], None
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except Exception:  # noqa: BLE001 - no champion alias
        champion = None
    return versions, champion


def _run_tags(project: Path, run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri).get_run(run_id).data.tags


def _experiment(project: Path) -> str:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri).get_experiment_by_name(
        "toy").experiment_id


def _artifact(key: str) -> str | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC)
    return str(found[0].data) if found else None


def _task_runs_of_latest_flow_run() -> list:
    """Task runs of the newest flow run, in start order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[run.id])))
    return sorted(tasks, key=lambda t: t.start_time or t.expected_start_time)


def test_flow_registers_champion_then_skips_unchanged_work(harness, flow_project: Path):
    from tunesmith.flows.retrain import retrain

    first = retrain("toy")
    assert first.status == "completed"
    assert "train" in first.ran
    # The graph in Prefect's UI: each step hangs off the one before (issue: ingest..tokenize
    # drawn side by side, as if parallel, when tasks passed nothing to each other).
    runs = _task_runs_of_latest_flow_run()
    assert [r.name.split("-")[0] for r in runs] == list(STEPS)
    for before, after in zip(runs, runs[1:], strict=False):
        assert {i.id for i in after.task_inputs.get("wait_for", [])} == {before.id}, after.name
    versions, champion = _versions(flow_project, "toy")
    assert len(versions) == 1 and champion == "1"
    assert "passed" in (_artifact("toy-validation") or "")
    assert _artifact("toy-metrics") is not None and _artifact("toy-gate") is not None
    # Prefect and MLflow point at each other: the link artifact (it never appeared while the
    # flow read a `run_url` the register result lacked) and the flow-run tags on the run.
    (version,) = versions
    link = _artifact("toy-mlflow-run") or ""  # markdown: [url](url)
    assert f"(http://127.0.0.1:5000/#/experiments/{_experiment(flow_project)}/runs/" \
           f"{version.run_id})" in link, link
    tags = _run_tags(flow_project, version.run_id)
    assert tags.get("prefect.flow_run_id") == str(runs[0].flow_run_id), tags

    started = time.perf_counter()
    second = retrain("toy")
    print(f"second run with nothing changed: {time.perf_counter() - started:.1f}s")
    assert second.ran == [] and second.cached == list(STEPS)
    assert len(_versions(flow_project, "toy")[0]) == 1  # nothing re-registered
    # A run that ran no step opened no MLflow run: the first run keeps its flow run's tag.
    assert _run_tags(flow_project, version.run_id)["prefect.flow_run_id"] == str(
        runs[0].flow_run_id)

    # Regression: evaluate reads register.primary_metric (the baseline comparison); the
    # cache key missed it. Now it and register re-run, nothing upstream does.
    third = retrain("toy", ["register.primary_metric=accuracy"])
    assert third.ran == ["evaluate", "register"], third
    metrics = json.loads((flow_project / "reports/toy/eval/metrics.json").read_text())
    assert metrics["beats_baseline"] == (metrics["accuracy"] >= metrics["baseline"]["accuracy"])


def test_flow_retokenizes_a_causal_lm_when_its_template_changes(harness, flow_project: Path,
                                                                tiny_gpt2: Path):
    """Regression: causal-LM tokenize reads train.prompt_template; a changed template must
    re-tokenize (and so retrain) instead of reusing the cached tokens."""
    from tunesmith.flows.retrain import retrain

    write_csv(flow_project / "data" / "chat.csv", make_rows(40, seed=2))
    (flow_project / "datasets" / "chat.yaml").write_text(
        "task: causal-lm\nsource: {path: data/chat.csv}\n"
        "columns: {prompt: text, response: label}\nvalidate: {min_rows: 10}\n"
        f"model: {{base: {tiny_gpt2}}}\ntokenize: {{max_length: 128}}\n"
        "train: {max_steps: 2, batch_size: 8}\nregister: {primary_metric: perplexity}\n")
    assert "tokenize" in retrain("chat").ran
    changed = retrain("chat", ['train.prompt_template="Q: {prompt}\\nA: "'])
    # validate reads it too (its token budget: the truncated share depends on the template)
    assert changed.cached == ["ingest", "clean"]
    assert changed.ran == ["validate", "tokenize", "train", "evaluate", "register"]


def test_flow_stops_at_validate_and_registers_nothing(harness, flow_project: Path):
    from tunesmith.errors import ValidationFailed
    from tunesmith.flows.retrain import retrain

    path = flow_project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("min_rows: 10", "min_rows: 10000"))
    with pytest.raises(ValidationFailed, match="expect_table_row_count_to_be_between"):
        retrain("toy")
    assert "FAILED" in (_artifact("toy-validation") or "")
    assert _versions(flow_project, "toy") == ([], None)
    assert not (flow_project / "models" / "toy").exists()


def test_bad_override_fails_before_any_task(harness, flow_project: Path):
    from tunesmith.errors import ConfigError
    from tunesmith.flows.retrain import retrain

    with pytest.raises(ConfigError, match="--set: train.epochs"):
        retrain("toy", ["train.epochs=lots"])
    assert not (flow_project / "data" / "raw" / "toy").exists()


def test_all_keeps_going_past_a_bad_dataset(harness, flow_project: Path, tiny_bert: Path,
                                            capsys):
    """`tunesmith run --all`: one dataset's bad data doesn't stop the others, and each
    dataset ends with its verdict block (the version, aliases, gate reasons, metric)."""
    from tunesmith.flows.retrain import run_from_cli

    write_csv(flow_project / "data" / "bad.csv", [(t, "pos") for t, _ in make_rows(30)])
    write_dataset_yaml(flow_project, "bad", base=str(tiny_bert), extra=FAST)
    capsys.readouterr()
    assert run_from_cli(None, True, []) == 1  # bad failed
    out = capsys.readouterr().out.splitlines()
    bad = out.index(next(x for x in out if x.startswith("bad: failed")))
    assert out[bad + 1] == "bad: nothing registered (the run stopped before register)"
    toy = out.index(next(x for x in out if x.startswith("toy: completed")))
    assert out[toy + 1] == ("toy: PROMOTED version 1 (fine-tuned (full)) to champion "
                            "(the first champion)")
    assert out[toy + 2].startswith("  version 1 (fine-tuned (full)): aliases challenger, "
                                   "champion; promoted")
    block = out[toy + 1:]
    assert any(line.startswith("    pass champion: no current champion") for line in block)
    assert any(line.startswith("  f1_macro on test: fine-tuned (full) ") for line in block)
    assert _versions(flow_project, "toy")[1] == "1"
    assert _versions(flow_project, "bad") == ([], None)


def test_second_trigger_is_skipped_while_one_runs(harness, flow_project: Path):
    from tunesmith.config import load_config
    from tunesmith.flows.lock import dataset_lock
    from tunesmith.flows.retrain import retrain

    with dataset_lock(load_config("toy", flow_project)) as acquired:
        assert acquired
        assert retrain("toy").status == "skipped (locked)"
    assert not (flow_project / "data" / "raw" / "toy").exists()


def test_validation_imports_in_a_daemon_thread():
    """`tunesmith run` imports GX in the background while the API boots (see
    tunesmith.flows.retrain.import_validation_in_background); a no-op run must not wait for it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from tunesmith.flows.retrain import GX_MODULE, import_validation_in_background\n"
            "assert GX_MODULE not in sys.modules\n"
            "t = import_validation_in_background(); assert t.daemon; t.join()\n"
            "assert GX_MODULE in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow  # the flow plus a launched 2-process training: ~2 min on 2 shared cores
def test_flow_trains_in_two_launched_processes(harness, flow_project: Path):
    from tunesmith.flows.retrain import retrain

    # The same global batch as FAST's (8): 2 workers x 4.
    summary = retrain("toy", overrides=["train.processes=2", "train.batch_size=4"])
    assert summary.status == "completed", summary
    trained = json.loads((flow_project / "models" / "toy" / "train_summary.json").read_text())
    assert trained["world_size"] == 2
    versions, champion = _versions(flow_project, "toy")
    assert len(versions) == 1 and champion == "1"
