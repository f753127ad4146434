"""Step `register`: a new registry version per evaluated model, promoted only through the gate.

Every run's model becomes a version of the registered model named after the dataset and
gets alias `challenger`. It becomes `champion` only if `should_promote` says so; moving
that alias is the very last action, so any failure before it leaves the old champion in
place. The decision is recorded as tags, a markdown artifact and in the model card. The
model is logged into the pipeline's MLflow run, which the runner opens around this step
(and closes FINISHED after it).

The best measured model is the champion: when the classical baseline evaluate fitted
(TF-IDF+LR, pixels+histogram LR) beats the fine-tuned model and `register.baseline_can_win`
is on, the baseline is registered too (a second version, served like the first) and goes
through the same gate (thresholds, collapse, champion margin); it then takes `challenger`,
and `champion` if it passes. The verdict (versions, aliases, reasons, the primary metric of
every model measured) is the run's MLflow description and the last lines on the console.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import faults
from tunesmith import metrics as M
from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem
from tunesmith.fingerprint import input_digests
from tunesmith.logged import Logged, relative
from tunesmith.registry.gate import (
    Decision,
    Gate,
    baseline_wins,
    family_reason,
    should_promote,
)
from tunesmith.steps import narrowed, task_of
from tunesmith.verdict import Candidate, Verdict, lines, markdown

# Run tags copied onto the model version: source sha256, split digests, the dvc.lock hash of
# data/raw/NAME and data/clean/NAME, the git commit, a causal LM's template digest. Enough
# to say which data (and rendering) made a model.
LINEAGE = ("data.", "dvc.ingest.", "dvc.clean.", "git.commit", "template.")


@dataclass
class RegisterResult:
    """The new version, the aliases it holds now, and why."""

    version: int  # the fine-tuned model's
    aliases: list[str]
    decision: Decision
    run_id: str
    model_uri: str
    # the classical baseline, registered when it beat the fine-tuned model (baseline_can_win)
    baseline_version: int | None = None
    baseline_aliases: list[str] = field(default_factory=list)
    baseline_decision: Decision | None = None
    promoted: int | None = None  # the version that became champion in this run
    verdict: list[str] = field(default_factory=list, repr=False)  # the console block
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
    t = cfg.train
    hint = (f"raise train.lr (now {_num(t.lr)}; `tunesmith tune --dataset {cfg.name}` picks one "
            f"on the val split), train longer (train.epochs {_num(t.epochs)}), or set "
            "train.class_weights=balanced")
    gate = Gate(thresholds, r.margin, r.primary_metric, r.require_beat_baseline, task.BASELINE,
                task.BASELINE_MIN_GAIN, hint, r.record_tolerance)
    return gate, skipped


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def decide(cfg: Config, report: dict[str, Any], current_champion: int | None,
           as_baseline: bool = False, record: dict[str, float] | None = None) -> Decision:
    """The gate on evaluate's report, refusing if the champion moved since it was re-scored.

    `as_baseline`: judge the report's classical baseline as the candidate (same gate, its
    own metrics and collapse verdict, no baseline rule). `record`: the champion's test
    metrics as recorded on its own run (champion_record)."""
    gate, skipped = gate_of(cfg)
    scored = report.get("champion") or {}
    champion = None
    if current_champion is not None:
        champion = M.summary(scored) if scored.get("version") == current_champion else {}
    if as_baseline:
        base = report["baseline"]
        decision = should_promote(M.summary(base), champion, None, gate,
                                  collapse=base.get("collapse"), is_baseline=True,
                                  champion_record=record)
    else:
        decision = should_promote(M.summary(report), champion, report.get("baseline"), gate,
                                  collapse=report.get("collapse"), champion_record=record)
    decision = Decision(decision.promote, (*skipped, *decision.reasons))
    if current_champion is not None and scored.get("version") != current_champion:
        note = (
            f"FAIL champion: the champion is version {current_champion} but evaluate "
            f"re-scored {scored.get('version') or 'none'}; re-run evaluate"
        )
        decision = Decision(False, (*decision.reasons, note))
    return decision


def champion_record(client: Any, version: Any) -> dict[str, float] | None:
    """The champion's test metrics as evaluate recorded them on the run that registered it
    (`test/...`, or `baseline/...` for a registered baseline); None when that run is gone."""
    try:
        metrics = client.get_run(version.run_id).data.metrics
    except Exception:  # noqa: BLE001 - a deleted run: the rule has nothing to compare
        return None
    prefix = "baseline/" if (version.tags or {}).get("model.family") == "baseline" else "test/"
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)} \
        or None


def baseline_contest(cfg: Config, report: dict[str, Any]) -> bool:
    """Whether the classical baseline is a candidate too: it beat the fine-tuned model on the
    primary metric and `register.baseline_can_win` is on."""
    pm = cfg.register_.primary_metric
    return cfg.register_.baseline_can_win and baseline_wins(
        pm, report.get(pm), (report.get("baseline") or {}).get(pm))


def _family_line(cfg: Config, report: dict[str, Any], task: Any) -> str | None:
    pm = cfg.register_.primary_metric
    base = (report.get("baseline") or {}).get(pm)
    if report.get(pm) is None or base is None:
        return None
    return family_reason(pm, report[pm], base, task.BASELINE, cfg.train.method)


@narrowed
def register(cfg: Config) -> RegisterResult:
    """Log, register and gate the evaluated model of `cfg` (see the module docstring)."""
    from tunesmith import tracking
    from tunesmith.registry import store

    report, model_dir, run_id = _inputs(cfg)
    task = task_of(cfg, "register")
    client = tracking.configure(cfg)
    current = store.version_for(cfg, store.CHAMPION)
    current_version = int(current.version) if current else None
    decision, base_decision = _decisions(cfg, report, task, current_version,
                                         champion_record(client, current) if current else None)

    job = _Job.open(cfg, task, client, run_id, report)
    version = job.version_of("fine-tuned", lambda: task.log_model(cfg, model_dir), decision)
    if version is None:  # every task type's log_model returns what it logged
        raise EnvironmentProblem(f"{cfg.name}: the {cfg.task} task logged no model to MLflow; "
                                 "nothing was registered")
    base_version = None
    if base_decision is not None:
        base_version = job.version_of(
            "baseline", lambda: task.log_baseline(cfg, cfg.dirs.eval), base_decision)
        if base_version is None:
            base_decision = None  # this task's baseline is not servable
    promoted, aliases_of = _move_aliases(cfg, version, decision, base_version, base_decision)

    candidates = [Candidate(version, f"fine-tuned ({cfg.train.method})",
                            tuple(aliases_of[version]), decision)]
    if base_version is not None and base_decision is not None:
        candidates.append(Candidate(base_version, f"{task.BASELINE} baseline",
                                    tuple(aliases_of[base_version]), base_decision))
    verdict = _verdict(cfg, report, task, candidates, current_version)
    logged = _run_record(cfg, report, task, verdict, job.cards, version, decision,
                         base_version, base_decision, promoted or current_version)
    return RegisterResult(version, aliases_of[version], decision, run_id, job.uris["fine-tuned"],
                          baseline_version=base_version,
                          baseline_aliases=aliases_of.get(base_version, []) if base_version
                          else [],
                          baseline_decision=base_decision, promoted=promoted,
                          verdict=lines(verdict), logged=logged)


def _inputs(cfg: Config) -> tuple[dict[str, Any], Path, str]:
    """evaluate's report, the trained model's folder and the pipeline run to log into; one
    line naming what is missing otherwise."""
    import mlflow

    metrics_path = cfg.dirs.eval / "metrics.json"
    model_dir = cfg.dirs.model / "model"
    if not metrics_path.is_file():
        raise EnvironmentProblem(f"{metrics_path}: not found; run the evaluate step first")
    if not (model_dir / "config.json").is_file():
        raise EnvironmentProblem(f"{model_dir}: no trained model here; run the train step first")
    if (active := mlflow.active_run()) is None:
        raise EnvironmentProblem("register logs into the pipeline's MLflow run: run it with "
                                 f"`tunesmith step register --dataset {cfg.name}`")
    report = json.loads(metrics_path.read_text(encoding="utf-8"))
    return report, model_dir, active.info.run_id


def _decisions(cfg: Config, report: dict[str, Any], task: Any, current_version: int | None,
               record: dict[str, float] | None) -> tuple[Decision, Decision | None]:
    """The gate's decision on the fine-tuned model, and on the classical baseline when it
    is a candidate too (baseline_contest); at most one of them promotes."""
    decision = decide(cfg, report, current_version, record=record)
    base_decision = decide(cfg, report, current_version, as_baseline=True, record=record) \
        if baseline_contest(cfg, report) else None
    if base_decision is not None and base_decision.promote and decision.promote:
        decision = Decision(False, (*decision.reasons, f"FAIL family: the {task.BASELINE} "
                                    "baseline beat this model and is promoted instead"))
    if (family := _family_line(cfg, report, task)) is not None:
        decision = Decision(decision.promote, (*decision.reasons, family))
        if base_decision is not None:
            base_decision = Decision(base_decision.promote, (*base_decision.reasons, family))
    return decision, base_decision


@dataclass
class _Job:
    """One register job: what its versions are made from, and what it made.

    One trained and evaluated model (the markers of register's inputs: train_summary.json
    and metrics.json, each unique to its run) has one version per family: a register
    killed after creating it is finished by the next one, not duplicated; a re-run with
    other gate settings re-applies the gate to the same version."""

    cfg: Config
    task: Any
    client: Any
    run_id: str
    report: dict[str, Any]
    key: str  # the register.job tag: a digest of register's input markers
    done: dict[str, Any]  # family -> the version a killed register left for this job
    run_tags: dict[str, str]
    train_summary: dict[str, Any] | None
    cards: list[tuple[str, str]] = field(default_factory=list)  # (artifact name, card)
    uris: dict[str, str] = field(default_factory=dict)  # family -> the model's URI

    @classmethod
    def open(cls, cfg: Config, task: Any, client: Any, run_id: str,
             report: dict[str, Any]) -> _Job:
        from tunesmith.registry import store

        digests = input_digests(cfg, "register")
        key = hashlib.sha256(json.dumps(digests).encode()).hexdigest()[:32] if digests else ""
        summary_path = cfg.dirs.model / "train_summary.json"
        train_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        return cls(cfg, task, client, run_id, report, key, store.versions_of_job(cfg, key),
                   client.get_run(run_id).data.tags, train_summary)

    def version_of(self, family: str, log: Any, dec: Decision) -> int | None:
        """The version of `family` for this job: made (log, smoke-test, create with its
        tags) or, left by a killed register, re-tagged; None if `log` has nothing to log."""
        from tunesmith import modelcard
        from tunesmith.registry import store

        cfg, task = self.cfg, self.task
        verdict = "promote" if dec.promote else "keep champion"
        tags = {"gate.decision": verdict, "gate.reasons": "\n".join(dec.reasons)[:5000],
                "model.family": family, "register.job": self.key}
        if (mv := self.done.get(family)) is None:
            if (info := log()) is None:
                return None
            self.uris[family] = info.model_uri
            faults.point("register.logged")
            store.smoke_test(info.model_uri, task.sample_inputs(cfg), task.PREDICTS,
                             task.serve)
            # The data version this model came from, on the version itself (see LINEAGE).
            lineage = {k: v[:5000] for k, v in self.run_tags.items() if k.startswith(LINEAGE)}
            # Created with its tags in one call: no version without them, even if killed.
            mv = store.register_version(cfg, info.model_uri,
                                        {**tags, "run_id": self.run_id, **lineage})
            faults.point("register.created")
        else:  # finishing the job a killed register left: same model, gate re-applied
            self.uris[family] = mv.source
            for key, value in tags.items():
                self.client.set_model_version_tag(cfg.name, mv.version, key, value)
        card = modelcard.render(cfg, task, mv.version, self.run_id, self.report, dec,
                                self.train_summary, self.run_tags, family=family)
        self.client.update_model_version(cfg.name, mv.version, description=card)
        faults.point("register.described")
        self.cards.append((f"model_card_v{mv.version}.md" if family == "baseline" else
                           "model_card.md", card))
        return int(mv.version)


def _move_aliases(cfg: Config, version: int, decision: Decision, base_version: int | None,
                  base_decision: Decision | None) -> tuple[int | None, dict[int, list[str]]]:
    """challenger: the best model of this run; champion (last, see the module docstring):
    the one that passed the gate (the baseline only ever passes when it beat the fine-tuned
    model). Returns the promoted version (or None) and each version's aliases now."""
    from tunesmith.registry import store

    best = base_version if base_version is not None else version
    store.set_alias(cfg, store.CHALLENGER, best)
    faults.point("register.challenger")
    promoted = None
    if base_decision is not None and base_decision.promote:
        promoted = base_version
    elif decision.promote:
        promoted = version
    if promoted is not None:
        store.set_alias(cfg, store.CHAMPION, promoted)
    aliases_of = {v: [a for a, holder in ((store.CHALLENGER, best), (store.CHAMPION, promoted))
                      if holder == v] for v in (version, base_version) if v is not None}
    return promoted, aliases_of


def _run_record(cfg: Config, report: dict[str, Any], task: Any, verdict: Verdict,
                cards: list[tuple[str, str]], version: int, decision: Decision,
                base_version: int | None, base_decision: Decision | None,
                champion: int | None) -> Logged:
    """What the pipeline run gets: the gate's tags, the verdict as its description, the
    decision and card files, and the LoRA adapter."""
    tags = {"gate.decision": "promote" if decision.promote else "keep champion",
            "registered.version": str(version), "gate.reasons": "\n".join(decision.reasons),
            "gate.champion": str(champion or "none"),
            "mlflow.note.content": markdown(verdict, _key_metrics(cfg, report))}
    texts = [("gate_decision.md", decision.markdown(f"Gate decision for {cfg.name} v{version}"))]
    if base_version is not None and base_decision is not None:
        tags.update({"registered.baseline_version": str(base_version),
                     "gate.baseline_decision": "promote" if base_decision.promote
                     else "keep champion"})
        texts.append((f"gate_decision_v{base_version}.md", base_decision.markdown(
            f"Gate decision for {cfg.name} v{base_version} ({task.BASELINE} baseline)")))
    adapter = cfg.dirs.model / "adapter"
    return Logged(
        tags=tags, texts=texts + cards,
        artifacts=[(relative(adapter, cfg.root), "adapter")] if adapter.is_dir() else [],
    )


def _verdict(cfg: Config, report: dict[str, Any], task: Any, candidates: list[Candidate],
             champion_before: int | None) -> Verdict:
    pm = cfg.register_.primary_metric
    scores: dict[str, float | None] = {f"fine-tuned ({cfg.train.method})": report.get(pm)}
    if isinstance(report.get("baseline"), dict):
        scores[task.BASELINE] = report["baseline"].get(pm)
    if isinstance(report.get("majority"), dict):
        scores["majority class"] = report["majority"].get(pm)
    champion = report.get("champion") or {}
    if champion.get("version"):
        scores[f"champion v{champion['version']}"] = champion.get(pm)
    warnings = []
    if (report.get("collapse") or {}).get("collapsed"):
        warnings.append(f"the fine-tuned model collapsed: {report['collapse']['reason']}")
    return Verdict(cfg.name, pm, tuple(candidates), champion_before, scores, tuple(warnings))


def _key_metrics(cfg: Config, report: dict[str, Any]) -> dict[str, float | None]:
    """The fine-tuned model's headline test metrics for the run description."""
    keys = (cfg.register_.primary_metric, "accuracy", "f1_macro", "mcc", "roc_auc", "ece",
            "perplexity", "eval_loss", "latency_ms_batch1", "model_size_mb")
    return {k: float(report[k]) for k in dict.fromkeys(keys)
            if isinstance(report.get(k), int | float) and not isinstance(report.get(k), bool)}
