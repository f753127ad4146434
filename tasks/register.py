"""Step `register`: a new registry version per evaluated model, promoted only through the gate.

Every run's model becomes a version of the registered model named after the dataset and
gets alias `challenger`. It becomes `champion` only if `should_promote` says so; moving
that alias is the very last action, so any failure before it leaves the old champion in
place. The decision is recorded as tags, a markdown artifact and in the model card; the
pipeline's MLflow run is closed (FINISHED) at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunesmith import metrics as M
from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem
from tunesmith.registry.gate import Decision, Gate, should_promote


@dataclass
class RegisterResult:
    """The new version, the aliases it holds now, and why."""

    version: int
    aliases: list[str]
    decision: Decision
    run_id: str
    model_uri: str


# Thresholds a causal LM cannot be measured on. params.yaml's default `f1_macro` threshold
# reaches every dataset through the merge and cannot be deleted there, so it is skipped
# (and said so) rather than failing every causal-LM run as "not measured".
# Run tags copied onto the model version: source sha256, split digests, the dvc.lock hash of
# data/raw/NAME and data/clean/NAME, the git commit. Enough to say which data made a model.
LINEAGE = ("data.", "dvc.ingest.", "dvc.clean.", "git.commit")

CLASSIFICATION_ONLY = frozenset({"accuracy", "f1_macro", "precision_macro", "recall_macro",
                                 "mcc", "roc_auc", "pr_auc", "ece"})


def gate_of(cfg: Config) -> tuple[Gate, list[str]]:
    """The gate for `cfg`'s task, and a reason line per threshold it leaves out."""
    r = cfg.register_
    thresholds, skipped = dict(r.thresholds), []
    if cfg.task == "causal-lm":
        for metric in sorted(CLASSIFICATION_ONLY & set(thresholds)):
            thresholds.pop(metric)
            skipped.append(f"skip threshold {metric}: not a causal-lm metric")
    name = "pixels+histogram LR" if cfg.task == "image-classification" else "TF-IDF+LR"
    return Gate(thresholds, r.margin, r.primary_metric, r.require_beat_baseline, name), skipped


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


def sample_texts(cfg: Config, n: int = 4) -> list[str]:
    """A few test texts for the load-and-predict check (a fixed one if there is no split)."""
    import pandas as pd

    path = cfg.dirs.clean / "test.parquet"
    column = {"causal-lm": "prompt", "image-classification": "image"}.get(cfg.task, "text")
    texts = pd.read_parquet(path)[column].astype(str).head(n).tolist() if path.is_file() else []
    if cfg.task == "image-classification":  # paths inside the clean split -> absolute
        return [str(cfg.dirs.clean / p) for p in texts]
    return texts or ["an example text to classify"]


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
    report = json.loads(metrics_path.read_text(encoding="utf-8"))

    with tracking.active_run(cfg, "register") as run_id:
        client = tracking.configure(cfg)
        current = store.version_for(cfg, store.CHAMPION)
        decision = decide(cfg, report, int(current.version) if current else None)
        if cfg.task == "causal-lm":
            info = store.log_generator(cfg, model_dir)
            store.smoke_test(info.model_uri, sample_texts(cfg, 2), expect=("response",))
        elif cfg.task == "image-classification":
            info = store.log_image_classifier(cfg, model_dir, cfg.labels)
            store.smoke_test(info.model_uri, sample_texts(cfg), column="image")
        else:
            info = store.log_classifier(cfg, model_dir, cfg.labels)
            store.smoke_test(info.model_uri, sample_texts(cfg))
        adapter = cfg.dirs.model / "adapter"
        if adapter.is_dir():
            mlflow.log_artifacts(str(adapter), "adapter")
        mv = store.register_version(cfg, info.model_uri)
        verdict = "promote" if decision.promote else "keep champion"
        # The data version this model came from, on the version itself (see LINEAGE).
        lineage = {k: v for k, v in client.get_run(run_id).data.tags.items()
                   if k.startswith(LINEAGE)}
        for key, value in {"gate.decision": verdict, "gate.reasons": "\n".join(decision.reasons),
                           "run_id": run_id, **lineage}.items():
            client.set_model_version_tag(cfg.name, mv.version, key, value[:5000])
        mlflow.set_tags({"gate.decision": verdict, "registered.version": mv.version,
                         "gate.reasons": "\n".join(decision.reasons)[:5000]})
        mlflow.log_text(decision.markdown(f"Gate decision for {cfg.name} v{mv.version}"),
                        "gate_decision.md")
        summary_path = cfg.dirs.model / "train_summary.json"
        card = modelcard.render(
            cfg, mv.version, run_id, report, decision,
            json.loads(summary_path.read_text()) if summary_path.is_file() else None,
            client.get_run(run_id).data.tags,
        )
        mlflow.log_text(card, "model_card.md")
        client.update_model_version(cfg.name, mv.version, description=card)
        store.set_alias(cfg, store.CHALLENGER, mv.version)
        aliases = [store.CHALLENGER]
        if decision.promote:
            store.set_alias(cfg, store.CHAMPION, mv.version)  # last: see the module docstring
            aliases.append(store.CHAMPION)
    tracking.finish_run(cfg)
    return RegisterResult(int(mv.version), aliases, decision, run_id, info.model_uri)
