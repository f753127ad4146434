"""The verdict of a pipeline run, said where people look: the console and the MLflow run page.

`register` builds one `Verdict` (the versions it registered, their aliases and gate reasons,
the primary metric of each model measured); `lines` is what `tunesmith run` and `tunesmith
step register` print last, `markdown` the MLflow run's description. Pure: no MLflow here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.registry.gate import Decision


@dataclass(frozen=True)
class Candidate:
    """One registered version of this run."""

    version: int
    family: str  # "fine-tuned (lora)" or "TF-IDF+LR baseline"
    aliases: tuple[str, ...]
    decision: Decision


@dataclass(frozen=True)
class Verdict:
    dataset: str
    metric: str
    candidates: tuple[Candidate, ...]
    champion_before: int | None  # the champion when the gate ran
    # primary metric on the test split: "fine-tuned", the baseline's name, "majority class",
    # "champion vN" (re-scored); None where not measured
    scores: dict[str, float | None] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def promoted(self) -> Candidate | None:
        return next((c for c in self.candidates if "champion" in c.aliases), None)

    def headline(self) -> str:
        new = self.promoted
        if new is not None:
            was = (f"was version {self.champion_before}" if self.champion_before
                   else "the first champion")
            return (f"{self.dataset}: PROMOTED version {new.version} ({new.family}) to champion "
                    f"({was})")
        kept = (f"champion stays version {self.champion_before}" if self.champion_before
                else "no champion: nothing to serve")
        return f"{self.dataset}: NOT promoted; {kept}"

    def comparison(self) -> str:
        """`f1_macro: fine-tuned 0.9810 | TF-IDF+LR 0.9860 | ...` (each model measured)."""
        shown = [f"{name} {value:.4f}" for name, value in self.scores.items()
                 if value is not None]
        return f"{self.metric} on test: " + (" | ".join(shown) or "not measured")


def lines(verdict: Verdict) -> list[str]:
    """The console block: headline, each version with its aliases and reasons, the metric."""
    out = [verdict.headline()]
    for c in verdict.candidates:
        state = "promoted" if "champion" in c.aliases else "not promoted"
        out.append(f"  version {c.version} ({c.family}): aliases "
                   f"{', '.join(c.aliases) or 'none'}; {state}")
        out += [f"    {reason}" for reason in c.decision.reasons]
    out.append(f"  {verdict.comparison()}")
    out += [f"  warning: {w}" for w in verdict.warnings]
    return out


def markdown(verdict: Verdict, metrics: dict[str, float | None]) -> str:
    """The MLflow run description: the verdict, the key metrics, each version's reasons."""
    text = [f"**{verdict.headline()}**", "", verdict.comparison(), ""]
    if metrics:
        text += ["| metric | value |", "| --- | --- |"]
        text += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if v is not None]
        text.append("")
    for c in verdict.candidates:
        text.append(f"Version {c.version} ({c.family}), aliases "
                    f"{', '.join(c.aliases) or 'none'}:")
        text += [f"- {reason}" for reason in c.decision.reasons]
        text.append("")
    text += [f"Warning: {w}" for w in verdict.warnings]
    return "\n".join(text).rstrip() + "\n"
