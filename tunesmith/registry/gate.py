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
    classifier (tunesmith.classification.collapse; None: not a classifier): a collapsed
    model fails. `is_baseline`: the candidate is the classical baseline itself (register's
    second candidate), so the baseline rule does not apply. `champion_record`: the
    champion's test metrics as recorded when it was registered (None: no champion, or none
    recorded): the candidate may not fall more than `gate.record_tolerance` below them.
    """
    reasons: list[str] = []
    ok = True
    pm = gate.primary_metric

    for metric, bound in sorted(gate.thresholds.items()):
        value = candidate.get(metric)
        word = "<=" if metric in LOWER_IS_BETTER else ">="
        if value is None:
            ok = False
            reasons.append(f"FAIL threshold {metric} {word} {bound:g}: metric not measured")
        elif better(metric, value, bound):
            reasons.append(f"pass threshold {metric} = {value:.4f} {word} {bound:g}")
        else:
            ok = False
            reasons.append(f"FAIL threshold {metric} = {value:.4f}, needs {word} {bound:g}")

    if collapse is not None and collapse.get("collapsed"):
        ok = False
        reasons.append(f"FAIL collapse: {collapse.get('reason') or 'one class only'} "
                       f"(hint: {gate.collapse_hint})")
    elif collapse is not None:
        reasons.append(
            f"pass collapse: the most predicted class ({collapse['top_class']}) is "
            f"{collapse['top_share']:.1%} of test rows, macro F1 {collapse['f1_macro']:.4f} "
            f"vs {collapse['majority_f1_macro']:.4f} for always the majority class")

    cand = candidate.get(pm)
    if cand is None:
        return Decision(False, (*reasons, f"FAIL primary metric {pm} not measured"))

    if is_baseline:
        reasons.append(f"skip baseline: this candidate is the {gate.baseline_name} baseline")
    elif not gate.require_beat_baseline:
        reasons.append("skip baseline: require_beat_baseline is false")
    elif baseline is None or baseline.get(pm) is None:
        reasons.append(f"skip baseline: no classical baseline {pm} for this run")
    elif better(pm, cand, baseline[pm], abs(baseline[pm]) * gate.baseline_min_gain):
        reasons.append(f"pass baseline: {pm} {cand:.4f} vs {gate.baseline_name} {baseline[pm]:.4f}")
    else:
        ok = False
        gain = f" by {gate.baseline_min_gain:.1%}" if gate.baseline_min_gain else ""
        reasons.append(
            f"FAIL baseline: {pm} {cand:.4f} does not beat {gate.baseline_name} "
            f"{baseline[pm]:.4f}{gain} (red flag: check the data and the training run)"
        )

    if gate.record_tolerance is not None and champion_record \
            and champion_record.get(pm) is not None:
        recorded = champion_record[pm]
        slack = abs(recorded) * gate.record_tolerance
        allowed = recorded + slack if pm in LOWER_IS_BETTER else recorded - slack
        if not better(pm, cand, allowed):
            ok = False
            reasons.append(
                f"FAIL record: {pm} {cand:.4f} is more than {gate.record_tolerance:.0%} "
                f"worse than the champion's own recorded {recorded:.4f} (its test set, when "
                "it was registered): this data looks worse for every model; check its "
                "labels, or raise register.record_tolerance if it is harder on purpose")
        else:
            reasons.append(f"pass record: {pm} {cand:.4f} vs the champion's recorded "
                           f"{recorded:.4f} (tolerance {gate.record_tolerance:g})")

    if champion is None:
        reasons.append("pass champion: no current champion, so there is nothing to beat")
    elif champion.get(pm) is None:
        ok = False
        reasons.append(
            f"FAIL champion: the current champion could not be re-scored on {pm} with this "
            "test set (e.g. a changed label set); `tunesmith promote` overrides by hand"
        )
    elif better(pm, cand, champion[pm], gate.margin):
        reasons.append(
            f"pass champion: {pm} {cand:.4f} vs champion {champion[pm]:.4f} "
            f"on the same test set (margin {gate.margin:g})"
        )
    else:
        ok = False
        reasons.append(
            f"FAIL champion: {pm} {cand:.4f} vs champion {champion[pm]:.4f} "
            f"on the same test set, needs a margin of {gate.margin:g}"
        )
    return Decision(ok, tuple(reasons))


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
