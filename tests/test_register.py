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

from tunesmith.errors import EnvironmentProblem
from tunesmith.objectives.classification import registering
from tunesmith.registry import Gate, should_promote, store
from tunesmith.tasks.register import decide, register
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
    from tunesmith.tasks.runner import run_step

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


# ------------------------------------------------- collapse, and the baseline as a candidate

COLLAPSED = {"collapsed": True, "reason": "predicts 'neg' for 100.0% of test rows",
             "top_class": "neg", "top_share": 1.0, "f1_macro": 0.45, "majority_f1_macro": 0.45}


def test_a_collapsed_model_fails_its_own_rule_with_a_hint() -> None:
    gate = Gate(thresholds={"f1_macro": 0.0}, require_beat_baseline=False,
                collapse_hint="raise train.lr")
    d = should_promote({"f1_macro": 0.45}, None, None, gate, collapse=COLLAPSED)
    assert not d.promote
    assert "FAIL collapse: predicts 'neg' for 100.0% of test rows (hint: raise train.lr)" \
        in d.reasons
    healthy = {**COLLAPSED, "collapsed": False, "top_share": 0.6, "f1_macro": 0.9}
    ok = should_promote({"f1_macro": 0.9}, None, None, gate, collapse=healthy)
    assert ok.promote and any(r.startswith("pass collapse: the most predicted class (neg) is "
                                           "60.0%") for r in ok.reasons)


def test_the_baseline_as_candidate_skips_the_baseline_rule_and_keeps_the_others() -> None:
    d = should_promote({"f1_macro": 0.9}, {"f1_macro": 0.95}, None, GATE, is_baseline=True)
    assert "skip baseline: this candidate is the TF-IDF+LR baseline" in d.reasons
    assert not d.promote and d.reasons[-1].startswith("FAIL champion")  # never a worse model


def test_family_reason_says_who_won_and_by_how_much() -> None:
    from tunesmith.registry.gate import baseline_wins, family_reason

    assert baseline_wins("f1_macro", 0.981, 0.986) and not baseline_wins("f1_macro", 0.9, 0.9)
    assert not baseline_wins("ece", 0.05, 0.10) and baseline_wins("ece", 0.10, 0.05)
    assert family_reason("f1_macro", 0.981, 0.986, "TF-IDF+LR", "full") == (
        "family: the TF-IDF+LR baseline wins, f1_macro 0.9860 vs fine-tuned (full) 0.9810, "
        "by 0.0050")
    assert family_reason("f1_macro", 0.99, 0.98, "TF-IDF+LR", "lora").startswith(
        "family: fine-tuned (lora) wins")


def test_collapse_and_majority_baseline_from_the_clean_splits(tmp_path) -> None:
    import numpy as np
    import pandas as pd

    from tunesmith.objectives.classification import evaluation as C

    for split, labels in (("train", ["a"] * 8 + ["b"] * 2), ("test", ["a"] * 9 + ["b"])):
        pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": labels}).to_parquet(
            tmp_path / f"{split}.parquet")
    majority = C.majority_baseline(tmp_path, ["a", "b"])
    assert majority["class"] == "a" and majority["accuracy"] == 0.9
    assert majority["f1_macro"] == pytest.approx((2 * 0.9 / 1.9) / 2)
    y = np.array([0] * 9 + [1])
    always_a = C.collapse(C.scored(y, np.tile([0.8, 0.2], (10, 1)), ["a", "b"]), majority)
    assert always_a["collapsed"] and "'a' for 100.0%" in always_a["reason"]
    right = C.collapse(C.scored(y, np.eye(2)[y], ["a", "b"]), majority)
    assert not right["collapsed"] and right["top_share"] == 0.9 and right["reason"] == ""


def test_a_collapsed_model_is_its_own_gate_reason_and_step_register_says_so(
        project, monkeypatch, capsys) -> None:
    """evaluate's collapse verdict reaches the gate as its own reason (with the hint), and
    `tunesmith step register` ends with the verdict block."""
    from cli_helpers import run_cli

    cfg = toy_config(project)
    run_pipeline(cfg, until="evaluate")
    path = cfg.dirs.eval / "metrics.json"
    report = json.loads(path.read_text())
    assert report["majority"]["name"] == "majority class" and "collapse" in report
    path.write_text(json.dumps({**report, "collapse": COLLAPSED}))
    sets = [f"--set={o}" for o in ("evaluate.latency_examples=4",
                                   "register.require_beat_baseline=false",
                                   "register.thresholds={f1_macro: 0.7}",
                                   "register.baseline_can_win=false", "train.epochs=6",
                                   "train.lr=1.0e-3")]
    out = run_cli(["step", "register", "--dataset", "toy", *sets], project, monkeypatch, capsys)
    assert out.code == 0, out.err
    tail = out.out.strip().splitlines()
    assert tail[0].startswith("register toy: version=1, aliases=['challenger']")
    assert tail[1] == "toy: NOT promoted; no champion: nothing to serve"
    assert tail[2] == "  version 1 (fine-tuned (full)): aliases challenger; not promoted"
    assert tail[3].startswith("    pass threshold f1_macro")
    assert tail[4] == ("    FAIL collapse: predicts 'neg' for 100.0% of test rows (hint: raise "
                       "train.lr (now 0.001; `tunesmith tune --dataset toy` picks one on the val "
                       "split), train longer (train.epochs 6), or set "
                       "train.class_weights=balanced)")
    assert any(line.startswith("  f1_macro on test: fine-tuned (full) ") and
               "| TF-IDF+LR " in line and "| majority class " in line for line in tail)
    assert tail[-1] == "  warning: the fine-tuned model collapsed: predicts 'neg' for 100.0% " \
        "of test rows"
    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    assert "FAIL collapse: predicts 'neg'" in client.get_model_version("toy", "1").tags[
        "gate.reasons"]
    assert store.version_for(cfg, "champion") is None


def test_the_baseline_becomes_champion_when_it_wins_and_is_served(project, monkeypatch,
                                                                   capsys) -> None:
    """A fine-tuned model that learnt nothing loses to TF-IDF+LR: the baseline is registered
    too (v2), passes the gate and is champion, is served by `predict` with the fine-tuned
    model's columns, and is re-scored by the next evaluate through the same path."""
    from cli_helpers import run_cli

    from tunesmith.tasks.runner import run_step

    cfg = toy_config(project, *DEGRADED, "register.baseline_can_win=true")
    first = run_pipeline(cfg)["register"]
    assert (first.version, first.aliases, first.decision.promote) == (1, [], False)
    assert (first.baseline_version, first.baseline_aliases) == (2, ["challenger", "champion"])
    assert first.baseline_decision.promote and first.promoted == 2
    assert any(r.startswith("family: the TF-IDF+LR baseline wins") for r in
               first.decision.reasons)
    assert "skip baseline: this candidate is the TF-IDF+LR baseline" in \
        first.baseline_decision.reasons
    client = MlflowClient(tracking_uri(cfg), tracking_uri(cfg))
    v2 = client.get_model_version("toy", "2")
    assert v2.tags["model.family"] == "baseline" and v2.tags["gate.decision"] == "promote"
    assert "classical **TF-IDF+LR baseline**" in v2.description
    assert client.get_model_version("toy", "1").tags["model.family"] == "fine-tuned"
    run = client.get_run(first.run_id)
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith("**toy: PROMOTED version 2 (TF-IDF+LR baseline) to champion "
                                  "(the first champion)**")
    assert "f1_macro on test: fine-tuned (full)" in description and "| f1_macro |" in description
    assert first.verdict[0] == description.splitlines()[0].strip("*")
    assert any(line.startswith("  version 2 (TF-IDF+LR baseline): aliases challenger, "
                               "champion; promoted") for line in first.verdict)

    # Served like the fine-tuned model: the same columns, through `tunesmith predict`.
    import pandas as pd

    served = store.load_pyfunc(cfg).predict(pd.DataFrame(
        {"text": ["the film was superb", "dull and boring"]}))
    assert list(served.columns) == ["label", "score", "prob_neg", "prob_pos"]
    assert served["label"].tolist() == ["pos", "neg"]
    out = run_cli(["predict", "--dataset", "toy", "a lovely warm film"], project, monkeypatch,
                  capsys)
    assert out.code == 0 and out.out.split("\t")[0] == "pos", out.err

    # The next evaluate re-scores the baseline champion through MLflow, like any champion.
    again = run_step(cfg, "evaluate")
    assert again.champion_version == 2
    assert again.champion["f1_macro"] == pytest.approx(run.data.metrics["baseline/f1_macro"])


def test_every_served_model_hints_its_input_as_a_dataframe() -> None:
    """MLflow warns "Add type hints to the `predict` method" at each log and load of a
    pyfunc whose `predict` has no hint on `model_input` (3 times in a run that registered
    the TF-IDF baseline); a DataFrame hint keeps the logged signature as the contract."""
    import ast

    checked = 0
    served = [REPO / "tunesmith" / "objectives" / "classification" / "served_baseline.py",
              *sorted((REPO / "tunesmith" / "objectives").glob("*/served.py"))]
    for path in served:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "predict":
                hint = {a.arg: a.annotation for a in node.args.args}.get("model_input")
                assert hint is not None and ast.unparse(hint) == "pd.DataFrame", path.name
                checked += 1
    assert checked == 3  # text, image and classical-baseline classifiers


def test_served_image_baseline_features_match_the_ones_it_was_fitted_on(tmp_path) -> None:
    """The served image baseline computes its features itself (it must not need tunesmith):
    they must be the fitted pipeline's, tunesmith/objectives/image_classification/baseline.py's."""
    import importlib.util

    import numpy as np
    from PIL import Image

    from tunesmith.objectives.image_classification.baseline import features

    rng = np.random.default_rng(0)
    paths = []
    for i, mode in enumerate(("RGB", "L", "RGBA")):
        array = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
        img = Image.fromarray(array).convert(mode)
        img.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    spec = importlib.util.spec_from_file_location("served", registering.SERVED_CODE)
    served = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(served)
    assert np.array_equal(served.image_features([str(p) for p in paths]), features(paths))


def test_a_candidate_far_below_the_champions_own_record_fails() -> None:
    """Shuffled labels hurt every model: the champion re-scored on the new data is no
    yardstick (0.486 vs 0.466 on a real SMS set), its own recorded score is."""
    gate = Gate(thresholds={}, primary_metric="f1_macro", require_beat_baseline=False)
    args = ({"f1_macro": 0.466}, {"f1_macro": 0.440}, None, gate)
    shuffled = should_promote(*args, champion_record={"f1_macro": 0.986})
    assert not shuffled.promote
    assert any(r.startswith("FAIL record: f1_macro 0.4660 is more than 10% worse than the "
                            "champion's own recorded 0.9860") for r in shuffled.reasons)
    assert should_promote(*args).promote  # without the record the coin toss would win
    near = should_promote({"f1_macro": 0.90}, {"f1_macro": 0.88}, None, gate,
                          champion_record={"f1_macro": 0.986})
    assert near.promote and any(r.startswith("pass record:") for r in near.reasons)
    # Lower is better (a causal LM's perplexity): 10% above the record fails.
    lm = Gate(thresholds={}, primary_metric="perplexity", require_beat_baseline=False)
    assert not should_promote({"perplexity": 1.70}, {"perplexity": 1.80}, None, lm,
                              champion_record={"perplexity": 1.456}).promote
    off = Gate(thresholds={}, primary_metric="f1_macro", require_beat_baseline=False,
               record_tolerance=None)
    assert should_promote(*args[:3], off, champion_record={"f1_macro": 0.986}).promote


def test_shuffled_labels_keep_the_champion_by_its_recorded_score(project) -> None:
    """A data version worse by construction (labels shuffled, same class shares): the real
    register keeps the champion and says why, with the baseline rule off."""
    import csv
    import random

    first = run_pipeline(toy_config(project))
    assert first["register"].aliases == ["challenger", "champion"]
    path = project / "data" / "toy.csv"
    rows = list(csv.reader(path.open(encoding="utf-8")))
    labels = [r[1] for r in rows[1:]]
    random.Random(0).shuffle(labels)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([rows[0], *([r[0], y] for r, y in zip(rows[1:], labels,
                                                                         strict=True))])
    second = run_pipeline(toy_config(project))
    reg = second["register"]
    assert reg.version == 2 and not reg.decision.promote
    assert any(r.startswith("FAIL record: f1_macro") for r in reg.decision.reasons), \
        reg.decision.reasons
    cfg = toy_config(project)
    assert int(store.version_for(cfg, "champion").version) == 1
