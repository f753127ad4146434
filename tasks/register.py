"""Step `register`: a new registry version per evaluated model, promoted only through the gate.

Every run's model becomes a version of the registered model named after the dataset and
gets alias `challenger`. It becomes `champion` only if `should_promote` says so; moving
that alias is the very last action, so any failure before it leaves the old champion in
place. The decision is recorded as tags, a markdown artifact and in the model card. The
model is logged into the pipeline's MLflow run, which the runner opens around this step
(and closes FINISHED after it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunesmith import metrics as M
from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem
from tunesmith.logged import Logged, relative
from tunesmith.registry.gate import Decision, Gate, should_promote
from tunesmith.steps import Step, narrowed, task_of

STEP = Step(
    name="register",
    # train, model.base, description, source.path, labels: the model card tells them.
    reads=("register", "tracking", "labels", "description", "source.path", "model.base",
           "train", "tokenize.max_length", "evaluate.batch_size"),
    inputs=("eval", "model", "clean"),
    outputs=(),
    uses=("log_model", "sample_inputs", "serve", "card_lines"),
)
# Run tags copied onto the model version: source sha256, split digests, the dvc.lock hash of
# data/raw/NAME and data/clean/NAME, the git commit, a causal LM's template digest. Enough
# to say which data (and rendering) made a model.
LINEAGE = ("data.", "dvc.ingest.", "dvc.clean.", "git.commit", "template.")


@dataclass
class RegisterResult:
    """The new version, the aliases it holds now, and why."""

    version: int
    aliases: list[str]
    decision: Decision
    run_id: str
    model_uri: str
    logged: Logged = field(default_factory=Logged, repr=False)


def gate_of(cfg: Config) -> tuple[Gate, list[str]]:
    """The gate for `cfg`'s task, and a reason line per threshold it leaves out.

    params.yaml's default `f1_macro` threshold reaches every dataset through the merge and
    cannot be deleted there, so a threshold on a metric the task type never measures is
    skipped (and said so) rather than failing every run as "not measured".
    """
    task = task_of(cfg, "register")
    r = cfg.register_
    thresholds, skipped = dict(r.thresholds), []
    for metric in sorted(set(thresholds) - task.MEASURES):
        thresholds.pop(metric)
        skipped.append(f"skip threshold {metric}: not a {task.NAME} metric")
    gate = Gate(thresholds, r.margin, r.primary_metric, r.require_beat_baseline, task.BASELINE,
                task.BASELINE_MIN_GAIN)
    return gate, skipped


def decide(cfg: Config, report: dict[str, Any], current_champion: int | None) -> Decision:
    """The gate on evaluate's report, refusing if the champion moved since it was re-scored."""
    gate, skipped = gate_of(cfg)
    scored = report.get("champion") or {}
    champion = None
    if current_champion is not None:
        champion = M.summary(scored) if scored.get("version") == current_champion else {}
    decision = should_promote(M.summary(report), champion, report.get("baseline"), gate)
    decision = Decision(decision.promote, (*skipped, *decision.reasons))
    if current_champion is not None and scored.get("version") != current_champion:
        note = (
            f"FAIL champion: the champion is version {current_champion} but evaluate "
            f"re-scored {scored.get('version') or 'none'}; re-run evaluate"
        )
        decision = Decision(False, (*decision.reasons, note))
    return decision


@narrowed
def register(cfg: Config) -> RegisterResult:
    """Log, register and gate the evaluated model of `cfg` (see the module docstring)."""
    import mlflow

    from tunesmith import modelcard, tracking
    from tunesmith.registry import store

    metrics_path = cfg.dirs.eval / "metrics.json"
    model_dir = cfg.dirs.model / "model"
    if not metrics_path.is_file():
        raise EnvironmentProblem(f"{metrics_path}: not found; run the evaluate step first")
    if not (model_dir / "config.json").is_file():
        raise EnvironmentProblem(f"{model_dir}: no trained model here; run the train step first")
    if (active := mlflow.active_run()) is None:
        raise EnvironmentProblem("register logs into the pipeline's MLflow run: run it with "
                                 f"`tunesmith step register --dataset {cfg.name}`")
    run_id = active.info.run_id
    report = json.loads(metrics_path.read_text(encoding="utf-8"))
    task = task_of(cfg, "register")
    client = tracking.configure(cfg)
    current = store.version_for(cfg, store.CHAMPION)
    decision = decide(cfg, report, int(current.version) if current else None)
    info = task.log_model(cfg, model_dir)
    store.smoke_test(info.model_uri, task.sample_inputs(cfg), task.PREDICTS, task.serve)
    mv = store.register_version(cfg, info.model_uri)
    verdict = "promote" if decision.promote else "keep champion"
    reasons = "\n".join(decision.reasons)
    # The data version this model came from, on the version itself (see LINEAGE).
    run_tags = client.get_run(run_id).data.tags
    lineage = {k: v for k, v in run_tags.items() if k.startswith(LINEAGE)}
    for key, value in {"gate.decision": verdict, "gate.reasons": reasons, "run_id": run_id,
                       **lineage}.items():
        client.set_model_version_tag(cfg.name, mv.version, key, value[:5000])
    summary_path = cfg.dirs.model / "train_summary.json"
    card = modelcard.render(
        cfg, task, mv.version, run_id, report, decision,
        json.loads(summary_path.read_text()) if summary_path.is_file() else None, run_tags)
    client.update_model_version(cfg.name, mv.version, description=card)
    store.set_alias(cfg, store.CHALLENGER, mv.version)
    aliases = [store.CHALLENGER]
    if decision.promote:
        store.set_alias(cfg, store.CHAMPION, mv.version)  # last: see the module docstring
        aliases.append(store.CHAMPION)
    adapter = cfg.dirs.model / "adapter"
    logged = Logged(
        tags={"gate.decision": verdict, "registered.version": str(mv.version),
              "gate.reasons": reasons},
        texts=[("gate_decision.md",
                decision.markdown(f"Gate decision for {cfg.name} v{mv.version}")),
               ("model_card.md", card)],
        artifacts=[(relative(adapter, cfg.root), "adapter")] if adapter.is_dir() else [],
    )
    return RegisterResult(int(mv.version), aliases, decision, run_id, info.model_uri, logged)
