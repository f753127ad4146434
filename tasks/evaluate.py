"""Step `evaluate`: score the trained model, its named baseline and the champion on test.

The task type scores (its `score_candidate`, `score_baseline`, `score_majority`,
`score_champion`); a classifier is also checked for collapse (one class for >= 99% of the
test rows, or macro F1 at the level of always predicting the majority class). This step
compares them the way the gate will (tunesmith.registry.gate.better: lower-is-better
metrics included), writes `cfg.dirs.eval` (metrics.json for DVC, the task's plots and
examples) and returns what the pipeline's MLflow run gets. It reads the registry (the
champion) but never opens a run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import metrics as M
from tunesmith.config import Config
from tunesmith.logged import Logged, relative
from tunesmith.steps import narrowed, task_of

COLLAPSE_HINT = ("check the learning rate (`tunesmith tune`), the epochs, or "
                 "train.class_weights=balanced")


@dataclass
class EvaluateResult:
    """Where the report went and the headline numbers."""

    metrics_path: Path
    metrics: dict[str, float]
    baseline: dict[str, float] | None = None
    champion_version: int | None = None
    champion: dict[str, float] | None = None
    majority: dict[str, float] | None = None  # always the majority class (classification)
    collapsed: bool | None = None  # None: not a classifier
    warnings: list[str] = field(default_factory=list)
    logged: Logged = field(default_factory=Logged, repr=False)


@narrowed
def evaluate(cfg: Config) -> EvaluateResult:
    """Score the candidate, the baseline and the champion; write the report (module doc)."""
    from tunesmith.objectives.classification.evaluation import clean_json, collapse
    from tunesmith.registry import store
    from tunesmith.registry.gate import baseline_wins, better

    task = task_of(cfg, "evaluate")
    out = cfg.dirs.eval
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report: dict[str, Any] = task.score_candidate(cfg, staging)
    warnings: list[str] = []
    pm = cfg.register_.primary_metric
    # The servable baseline is saved only when it beat the candidate: register serves it
    # then (baseline_contest), never otherwise.
    baseline = task.score_baseline(
        cfg, staging, lambda scores: baseline_wins(pm, report.get(pm), scores.get(pm))) \
        if cfg.evaluate.baseline else None
    if baseline is not None:
        report["baseline"] = {"name": task.BASELINE, **baseline}
        if report.get(pm) is not None and baseline.get(pm) is not None:
            report["beats_baseline"] = better(pm, report[pm], baseline[pm],
                                              abs(baseline[pm]) * task.BASELINE_MIN_GAIN)
            if not report["beats_baseline"]:
                warnings.append(f"red flag: fine-tuned {pm} {report[pm]:.4f} is worse than the "
                                f"{task.BASELINE} baseline {baseline[pm]:.4f}")
    if (majority := task.score_majority(cfg)) is not None:
        report["majority"] = {"name": "majority class", **majority}
        report["collapse"] = collapse(report, majority)
        if report["collapse"]["collapsed"]:
            warnings.append(f"collapsed: the model {report['collapse']['reason']}; "
                            f"{COLLAPSE_HINT}")
        if baseline is not None and "predicted_share" in baseline:
            report["baseline"]["collapse"] = collapse(baseline, majority)
    champion_version = champion = None
    if (mv := store.version_for(cfg, store.CHAMPION)) is not None:
        champion_version, champion = int(mv.version), task.score_champion(cfg)
        report["champion"] = {"version": champion_version, **(champion or {})}
    (staging / "metrics.json").write_text(json.dumps(clean_json(report), indent=2),
                                          encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return EvaluateResult(
        metrics_path=out / "metrics.json", metrics=M.summary(report),
        baseline=None if baseline is None else M.summary(baseline),
        champion_version=champion_version,
        champion=None if champion is None else M.summary(champion),
        majority=None if majority is None else M.summary(majority),
        collapsed=report["collapse"]["collapsed"] if "collapse" in report else None,
        warnings=warnings, logged=_logged(cfg, report, warnings),
    )


def _logged(cfg: Config, report: dict[str, Any], warnings: list[str]) -> Logged:
    """Scalar metrics (test/, baseline/, champion/, class/), the verdict tags, eval/ files."""
    metrics = {f"test/{k}": v for k, v in M.summary(report).items()}
    for prefix in ("baseline", "champion", "majority"):
        if isinstance(report.get(prefix), dict):
            metrics.update({f"{prefix}/{k}": v for k, v in M.summary(report[prefix]).items()})
    for label, stats in report.get("per_class", {}).items():
        metrics.update({f"class/{label}/{k}": float(v) for k, v in stats.items()})
    tags = {}
    if "beats_baseline" in report:
        tags["eval.beats_baseline"] = str(report["beats_baseline"]).lower()
    if isinstance(report.get("collapse"), dict):
        verdict = report["collapse"]
        metrics["eval/collapsed"] = float(verdict["collapsed"])
        metrics["eval/top_class_share"] = float(verdict["top_share"])
        tags["eval.collapsed"] = str(verdict["collapsed"]).lower()
        if verdict["collapsed"]:
            tags["eval.collapse"] = f"{verdict['reason']}; {COLLAPSE_HINT}"
    if warnings:
        tags["eval.warnings"] = "; ".join(warnings)
    # A task's *.table.jsonl files (e.g. generated answers) become MLflow tables too.
    tables = [(f"eval/{p.name.removesuffix('.table.jsonl')}.json", relative(p, cfg.root))
              for p in sorted(cfg.dirs.eval.glob("*.table.jsonl"))]
    return Logged(metrics=metrics, tags=tags, tables=tables,
                  artifacts=[(relative(cfg.dirs.eval, cfg.root), "eval")])
