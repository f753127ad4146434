"""The champion gate as a pure function: metrics in, a decision with reasons out.

Nothing here touches MLflow, so every rule is tested directly (tests/test_register.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Metrics where smaller is better: a threshold on them is an upper bound and "beats"
# means lower. Everything else (accuracy, f1, auc, mcc, ...) is higher-is-better.
LOWER_IS_BETTER = frozenset(
    {"ece", "eval_loss", "loss", "perplexity", "latency_ms_batch1", "latency_ms_batched",
     "model_size_mb"}
)


@dataclass(frozen=True)
class Gate:
    """The rules of `register` (mirrors `RegisterConfig`, kept free of pydantic)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    margin: float = 0.0
    primary_metric: str = "f1_macro"
    require_beat_baseline: bool = True
    baseline_name: str = "TF-IDF+LR"  # images: "pixels+histogram LR"
    # Relative gain the candidate needs over the baseline: 0 lets a tie pass (a classifier
    # matching TF-IDF+LR on easy data); a causal LM must beat its own untuned base.
    baseline_min_gain: float = 0.0
    # What to try when a classifier collapsed (said in the collapse reason).
    collapse_hint: str = "check the learning rate, the epochs or class weights"
    # How far below the champion's own recorded test score (measured when it was registered,
    # on its own test set) a candidate may land, as a share of that score (0.1: 10%, so 0.887
    # under a recorded 0.986 macro F1, 1.60 over a recorded perplexity of 1.456); None turns
    # the rule off. Re-scoring the
    # champion on new data alone is blind to data that got worse for every model: on an SMS
    # set with shuffled labels the champion re-scored 0.486 and the candidate 0.466 macro
    # F1, a 0.02 coin toss, while the champion had recorded 0.986.
    record_tolerance: float | None = 0.1


@dataclass(frozen=True)
class Decision:
    """Whether the candidate becomes champion, and one line per rule saying why."""

    promote: bool
    reasons: tuple[str, ...]

    def markdown(self, title: str = "Gate decision") -> str:
        verdict = "**promote to champion**" if self.promote else "**keep the current champion**"
        lines = [f"# {title}", "", f"Decision: {verdict}", ""]
        lines += [f"- {r}" for r in self.reasons]
        return "\n".join(lines) + "\n"


def better(metric: str, a: float, b: float, margin: float = 0.0) -> bool:
    """True if `a` is at least `margin` better than `b` on `metric` (ties pass when margin=0)."""
    if metric in LOWER_IS_BETTER:
        return b - a >= margin
    return a - b >= margin


def should_promote(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    baseline: Mapping[str, float] | None,
    gate: Gate,
    collapse: Mapping[str, Any] | None = None,
    is_baseline: bool = False,
    champion_record: Mapping[str, float] | None = None,
) -> Decision:
    """Apply the gate: every threshold, the collapse rule, the baseline rule, then the
    champion margin.

    `champion` is the current champion's metrics re-scored on the candidate's test set, or
    None when there is no champion (that rule then passes trivially). A champion whose
    metrics lack the primary metric (it could not be re-scored) fails the rule: a model we
    cannot compare never replaces one that exists. `collapse` is evaluate's verdict on a
    classifier (tunesmith.objectives.classification.evaluation.collapse; None: not a
    classifier): a collapsed model fails. `is_baseline`: the candidate is the classical
    baseline itself (register's second candidate), so the baseline rule does not apply.
    `champion_record`: the champion's test metrics as recorded when it was registered (None:
    no champion, or none recorded): the candidate may not fall more than
    `gate.record_tolerance` below them.
    """
    checks = [*_thresholds(candidate, gate), *_collapse(collapse, gate)]
    cand = candidate.get(gate.primary_metric)
    if cand is None:
        reasons = [reason for _, reason in checks]
        return Decision(False, (*reasons, f"FAIL primary metric {gate.primary_metric} "
                                          "not measured"))
    checks += [_baseline(cand, baseline, gate, is_baseline), *_record(cand, champion_record, gate),
               _champion(cand, champion, gate)]
    return Decision(all(ok for ok, _ in checks), tuple(reason for _, reason in checks))


# Each rule: (passed, the reason line), in the order should_promote applies them.
Check = tuple[bool, str]


def _thresholds(candidate: Mapping[str, float], gate: Gate) -> list[Check]:
    checks = []
    for metric, bound in sorted(gate.thresholds.items()):
        value = candidate.get(metric)
        word = "<=" if metric in LOWER_IS_BETTER else ">="
        if value is None:
            checks.append((False, f"FAIL threshold {metric} {word} {bound:g}: metric not measured"))
        elif better(metric, value, bound):
            checks.append((True, f"pass threshold {metric} = {value:.4f} {word} {bound:g}"))
        else:
            checks.append((False, f"FAIL threshold {metric} = {value:.4f}, needs {word} {bound:g}"))
    return checks


def _collapse(collapse: Mapping[str, Any] | None, gate: Gate) -> list[Check]:
    if collapse is None:
        return []
    if collapse.get("collapsed"):
        return [(False, f"FAIL collapse: {collapse.get('reason') or 'one class only'} "
                        f"(hint: {gate.collapse_hint})")]
    return [(True, f"pass collapse: the most predicted class ({collapse['top_class']}) is "
                   f"{collapse['top_share']:.1%} of test rows, macro F1 "
                   f"{collapse['f1_macro']:.4f} vs {collapse['majority_f1_macro']:.4f} for "
                   "always the majority class")]


def _baseline(cand: float, baseline: Mapping[str, float] | None, gate: Gate,
              is_baseline: bool) -> Check:
    pm, name = gate.primary_metric, gate.baseline_name
    if is_baseline:
        return True, f"skip baseline: this candidate is the {name} baseline"
    if not gate.require_beat_baseline:
        return True, "skip baseline: require_beat_baseline is false"
    if baseline is None or baseline.get(pm) is None:
        return True, f"skip baseline: no classical baseline {pm} for this run"
    if better(pm, cand, baseline[pm], abs(baseline[pm]) * gate.baseline_min_gain):
        return True, f"pass baseline: {pm} {cand:.4f} vs {name} {baseline[pm]:.4f}"
    gain = f" by {gate.baseline_min_gain:.1%}" if gate.baseline_min_gain else ""
    return False, (f"FAIL baseline: {pm} {cand:.4f} does not beat {name} "
                   f"{baseline[pm]:.4f}{gain} (red flag: check the data and the training run)")


def _record(cand: float, record: Mapping[str, float] | None, gate: Gate) -> list[Check]:
    pm, tolerance = gate.primary_metric, gate.record_tolerance
    if tolerance is None or not record or record.get(pm) is None:
        return []
    recorded = record[pm]
    slack = abs(recorded) * tolerance
    allowed = recorded + slack if pm in LOWER_IS_BETTER else recorded - slack
    if better(pm, cand, allowed):
        return [(True, f"pass record: {pm} {cand:.4f} vs the champion's recorded "
                       f"{recorded:.4f} (tolerance {tolerance:g})")]
    return [(False, f"FAIL record: {pm} {cand:.4f} is more than {tolerance:.0%} worse than "
                    f"the champion's own recorded {recorded:.4f} (its test set, when it was "
                    "registered): this data looks worse for every model; check its labels, "
                    "or raise register.record_tolerance if it is harder on purpose")]


def _champion(cand: float, champion: Mapping[str, float] | None, gate: Gate) -> Check:
    pm = gate.primary_metric
    if champion is None:
        return True, "pass champion: no current champion, so there is nothing to beat"
    if champion.get(pm) is None:
        return False, (f"FAIL champion: the current champion could not be re-scored on {pm} "
                       "with this test set (e.g. a changed label set); `tunesmith promote` "
                       "overrides by hand")
    if better(pm, cand, champion[pm], gate.margin):
        return True, (f"pass champion: {pm} {cand:.4f} vs champion {champion[pm]:.4f} "
                      f"on the same test set (margin {gate.margin:g})")
    return False, (f"FAIL champion: {pm} {cand:.4f} vs champion {champion[pm]:.4f} "
                   f"on the same test set, needs a margin of {gate.margin:g}")


def baseline_wins(metric: str, fine_tuned: float | None, baseline: float | None) -> bool:
    """The classical baseline strictly beats the fine-tuned model on `metric` (a tie goes to
    the fine-tuned model, as the baseline rule lets it pass)."""
    return fine_tuned is not None and baseline is not None and \
        not better(metric, fine_tuned, baseline)


def family_reason(metric: str, fine_tuned: float, baseline: float, baseline_name: str,
                  method: str) -> str:
    """Which model family won on `metric`, and by how much (a gate reason line)."""
    gap = abs(fine_tuned - baseline)
    if baseline_wins(metric, fine_tuned, baseline):
        return (f"family: the {baseline_name} baseline wins, {metric} {baseline:.4f} vs "
                f"fine-tuned ({method}) {fine_tuned:.4f}, by {gap:.4f}")
    return (f"family: fine-tuned ({method}) wins, {metric} {fine_tuned:.4f} vs {baseline_name} "
            f"{baseline:.4f}, by {gap:.4f}")
