"""The champion gate: pure decision rules, and the real register step on MLflow/SQLite."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from mlflow.tracking import MlflowClient
from registry_helpers import (
    DEGRADED,
    one_torch_thread,  # noqa: F401 (a fixture, used by name)
    run_pipeline,
    toy_config,
)

from tasks.register import decide, register
from tunesmith.errors import EnvironmentProblem
from tunesmith.registry import Gate, should_promote, store
from tunesmith.tracking import tracking_uri

GATE = Gate(thresholds={"f1_macro": 0.7}, margin=0.01, primary_metric="f1_macro")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test tracks into its project's sqlite file, never a store named by the shell.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ------------------------------------------------------------------------ should_promote


def test_first_model_is_promoted_and_says_why() -> None:
    d = should_promote({"f1_macro": 0.9}, None, {"f1_macro": 0.8}, GATE)
    assert d.promote
    assert any("no current champion" in r for r in d.reasons)
    assert "promote to champion" in d.markdown()


def test_threshold_failure_blocks() -> None:
    d = should_promote({"f1_macro": 0.6}, None, {"f1_macro": 0.5}, GATE)
    assert not d.promote
    assert any(r.startswith("FAIL threshold f1_macro") for r in d.reasons)


def test_missing_threshold_metric_blocks() -> None:
    gate = Gate(thresholds={"roc_auc": 0.5}, primary_metric="f1_macro")
    d = should_promote({"f1_macro": 0.9}, None, None, gate)
    assert not d.promote and "not measured" in d.reasons[0]


def test_lower_is_better_threshold_is_an_upper_bound() -> None:
    gate = Gate(thresholds={"ece": 0.1}, require_beat_baseline=False)
    assert should_promote({"f1_macro": 0.9, "ece": 0.05}, None, None, gate).promote
    assert not should_promote({"f1_macro": 0.9, "ece": 0.2}, None, None, gate).promote


def test_losing_to_baseline_is_a_red_flag_unless_disabled() -> None:
    d = should_promote({"f1_macro": 0.8}, None, {"f1_macro": 0.85}, GATE)
    assert not d.promote and any("red flag" in r for r in d.reasons)
    relaxed = Gate(thresholds={"f1_macro": 0.7}, require_beat_baseline=False)
    assert should_promote({"f1_macro": 0.8}, None, {"f1_macro": 0.85}, relaxed).promote


def test_champion_must_be_beaten_by_the_margin() -> None:
    base = {"f1_macro": 0.5}
    assert not should_promote({"f1_macro": 0.805}, {"f1_macro": 0.8}, base, GATE).promote
    assert should_promote({"f1_macro": 0.815}, {"f1_macro": 0.8}, base, GATE).promote
    worse = should_promote({"f1_macro": 0.75}, {"f1_macro": 0.8}, base, GATE)
    assert not worse.promote and worse.reasons[-1].startswith("FAIL champion")


def test_champion_that_could_not_be_rescored_is_kept() -> None:
    d = should_promote({"f1_macro": 0.99}, {}, {"f1_macro": 0.5}, GATE)
    assert not d.promote and "could not be re-scored" in d.reasons[-1]


def test_decide_refuses_when_the_champion_moved_since_evaluate(project) -> None:
    cfg = toy_config(project)
    report = {"f1_macro": 0.99, "baseline": {"f1_macro": 0.5},
              "champion": {"version": 1, "f1_macro": 0.6}}
    assert decide(cfg, report, current_champion=1).promote
    moved = decide(cfg, report, current_champion=2)
    assert not moved.promote and "re-run evaluate" in moved.reasons[-1]


def test_decide_keeps_a_champion_evaluate_could_not_score(project) -> None:
    cfg = toy_config(project)
    report = {"f1_macro": 0.99, "baseline": {"f1_macro": 0.5}, "champion": {"version": 1}}
    d = decide(cfg, report, current_champion=1)
    assert not d.promote and "could not be re-scored" in d.reasons[-1]


def test_causal_lm_skips_the_inherited_classification_threshold(project) -> None:
    cfg = toy_config(project, "task=causal-lm", "columns={prompt: text, response: label}",
                     "register.primary_metric=perplexity")
    d = decide(cfg, {"perplexity": 12.0, "eval_loss": 2.5}, current_champion=None)
    assert d.promote and d.reasons[0] == "skip threshold f1_macro: not a causal-lm metric"


# ----------------------------------------------------------------- the real register step


def test_register_needs_evaluate_first(project) -> None:
    cfg = toy_config(project)
    with pytest.raises(EnvironmentProblem, match="metrics.json: not found"):
        register(cfg)


def test_a_threshold_on_a_metric_the_task_never_measures_is_skipped(project) -> None:
    cfg = toy_config(project, "register.thresholds={f1_macro: 0.7, perplexity: 10}")
    d = decide(cfg, {"f1_macro": 0.9, "baseline": {"f1_macro": 0.5}}, current_champion=None)
    assert d.promote and "skip threshold perplexity: not a text-classification metric" in d.reasons


def test_champion_survives_a_degraded_run_and_rollback(project) -> None:
    """Acceptance: run 1 -> champion; run 2, a model that learnt nothing on the same data ->
    challenger only; the champion stays; promote and rollback move the alias by hand."""
    cfg = toy_config(project)
    # Both URIs explicit: a bare MlflowClient(uri) takes the process-wide registry URI,
    # which the previous test pointed at its own project.
    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    assert tracking_uri(cfg) == f"sqlite:///{project / 'mlflow.db'}"

    first = run_pipeline(cfg)
    ev1, reg1 = first["evaluate"], first["register"]
    assert ev1.metrics["f1_macro"] >= 0.7 and ev1.champion_version is None
    assert reg1.version == 1 and reg1.aliases == ["challenger", "champion"]
    run1 = client.get_run(reg1.run_id)
    assert run1.info.status == "FINISHED"
    assert run1.data.tags["gate.decision"] == "promote"
    assert "test/f1_macro" in run1.data.metrics and "train.lr" in run1.data.params

    second = run_pipeline(toy_config(project, *DEGRADED))
    ev2, reg2 = second["evaluate"], second["register"]
    assert reg2.run_id != reg1.run_id  # register closed run 1; run 2 is a fresh run
    # The champion was re-scored on run 2's test set, and the untrained model lost to it.
    assert ev2.champion_version == 1
    assert ev2.champion["f1_macro"] == pytest.approx(ev1.metrics["f1_macro"])
    assert ev2.metrics["f1_macro"] < ev1.metrics["f1_macro"]
    assert reg2.version == 2 and reg2.aliases == ["challenger"] and not reg2.decision.promote
    assert int(store.version_for(cfg, "champion").version) == 1
    assert int(store.version_for(cfg, "challenger").version) == 2
    v2 = client.get_model_version("toy", "2")
    assert v2.tags["gate.decision"] == "keep champion"
    assert "FAIL champion" in v2.tags["gate.reasons"]
    assert "# Model card: toy version 2" in v2.description
    artifacts = {a.path for a in client.list_artifacts(reg2.run_id)}
    assert {"gate_decision.md", "model_card.md", "eval", "data"} <= artifacts

    store.move_champion(cfg, 2, "promote", "testing by hand")
    assert int(store.version_for(cfg, "champion").version) == 2
    assert store.move_champion(cfg, 1, "rollback") == 2
    assert int(store.version_for(cfg, "champion").version) == 1
    v1 = client.get_model_version("toy", "1")
    assert v1.tags["rollback.from"] == "2" and "manual rollback" in v1.description
    with pytest.raises(EnvironmentProblem, match="no version 9"):
        store.move_champion(cfg, 9, "promote")


def test_failure_before_the_alias_move_keeps_the_champion(project) -> None:
    from tunesmith.runner import run_step

    cfg = toy_config(project)
    run_pipeline(cfg)
    # Evaluate's report (champion v1 re-scored: a tie, so the gate would promote) stays;
    # the model on disk breaks, so register fails after logging it, before any alias.
    report = json.loads((cfg.dirs.eval / "metrics.json").read_text())
    report["champion"] = {"version": 1, **{k: v for k, v in report.items() if k == "f1_macro"}}
    (cfg.dirs.eval / "metrics.json").write_text(json.dumps(report))
    assert decide(cfg, report, 1).promote
    (cfg.dirs.model / "model" / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(EnvironmentProblem, match="does not load and predict"):
        run_step(cfg, "register")
    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    assert int(store.version_for(cfg, "champion").version) == 1
    assert [int(v.version) for v in client.search_model_versions("name='toy'")] == [1]
    failed = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                                "attributes.status = 'FAILED'")
    assert len(failed) == 1 and failed[0].data.tags["step.register"] == "failed"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_default_mlflow_ui_shows_the_champion_in_a_browser(project) -> None:
    """`mlflow ui` run bare in the project root, browsed by headless Chromium (~90 s)."""
    cfg = toy_config(project)
    run_pipeline(cfg)
    shot = project / "model_page.png"
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_mlflow_ui.py"), "--root", str(project),
         "--dataset", "toy", "--screenshot", str(shot)],
        capture_output=True, text=True, timeout=400,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert "alias 'champion'" in out.stdout and shot.read_bytes()[:4] == b"\x89PNG"
