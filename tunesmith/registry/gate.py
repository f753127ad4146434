"""The champion gate as a pure function: metrics in, a decision with reasons out.

Nothing here touches MLflow, so every rule is tested directly (tests/test_register.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
) -> Decision:
    """Apply the gate: every threshold, the baseline rule, then the champion margin.

    `champion` is the current champion's metrics re-scored on the candidate's test set, or
    None when there is no champion (that rule then passes trivially). A champion whose
    metrics lack the primary metric (it could not be re-scored) fails the rule: a model we
    cannot compare never replaces one that exists.
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

    cand = candidate.get(pm)
    if cand is None:
        return Decision(False, (*reasons, f"FAIL primary metric {pm} not measured"))

    if not gate.require_beat_baseline:
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
