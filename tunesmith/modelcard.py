"""The model card logged with every registered version (markdown)."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.registry.gate import Decision

_HEADLINE = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "mcc", "roc_auc",
             "pr_auc", "ece", "eval_loss", "perplexity")


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def render(
    cfg: Config,
    task: Any,
    version: int | str,
    run_id: str,
    report: dict[str, Any],
    decision: Decision,
    train_summary: dict[str, Any] | None = None,
    data_tags: dict[str, str] | None = None,
    family: str = "fine-tuned",
) -> str:
    """Data, method, metrics vs baseline and champion, the gate decision, use and limits
    (the last two from the task type's `card_lines`). `family="baseline"`: the card of the
    classical baseline registered in its own right (its metrics against the fine-tuned)."""
    tags = data_tags or {}
    champion = report.get("champion") or {}
    baseline = report.get("baseline") or {}
    name = baseline.get("name", task.BASELINE)
    this, other, other_label = report, baseline, f"{name} baseline"
    if family == "baseline":
        this, other, other_label = baseline, report, f"fine-tuned ({cfg.train.method})"
    lines = [
        f"# Model card: {cfg.name} version {version}",
        "",
        f"{cfg.description or 'A tunesmith ' + task.NAME + ' model.'}",
        "",
        "## Data",
        "",
        f"- source: `{tags.get('data.source', cfg.source.path)}`",
        f"- labels: {', '.join(cfg.labels) or '-'}",
    ]
    for split in ("train", "val", "test"):
        if f"data.{split}.rows" in tags:
            lines.append(
                f"- {split}: {tags[f'data.{split}.rows']} rows, digest "
                f"`{tags.get(f'data.{split}.digest', '?')}`"
            )
    if "git.commit" in tags:
        lines.append(f"- code: git commit `{tags['git.commit']}`")
    t = cfg.train
    summary = train_summary or {}
    lr = summary.get("lr", t.lr)
    epochs = summary.get("epochs", t.epochs)
    lines += ["", "## Method", ""]
    if family == "baseline":
        lines += [
            f"- family: the classical **{name} baseline** (scikit-learn), fit on the train "
            "split by evaluate and registered because it beat the fine-tuned model",
            f"- the fine-tuned candidate of the same run: `{cfg.model.base}`, method "
            f"`{t.method}`",
        ]
    else:
        lines.append(f"- family: fine-tuned; base model: `{cfg.model.base}`, method `{t.method}`")
    lines += [
        f"- epochs {_num(epochs)}, lr {_num(lr)}"
        + (" (chosen on val by `train.lr: auto`)" if t.lr == "auto" else "")
        + f", batch {t.batch_size}, scheduler {t.scheduler}, "
        f"max length {cfg.tokenize.max_length}, seed {t.seed}",
        f"- MLflow run: `{run_id}`",
    ]
    if train_summary and family != "baseline":
        shown = {k: v for k, v in train_summary.items() if isinstance(v, (int, float, str))}
        lines.append("- training: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    champ_label = f"champion v{champion['version']}" if champion.get("version") else "champion"
    lines += [
        "",
        "## Metrics (test split)",
        "",
        f"| metric | this model | {other_label} | {champ_label} (re-scored) | majority class |",
        "| --- | --- | --- | --- | --- |",
    ]
    majority = report.get("majority") or {}
    for key in _HEADLINE:
        if key in this:
            lines.append(
                f"| {key} | {_fmt(this.get(key))} | {_fmt(other.get(key))} | "
                f"{_fmt(champion.get(key))} | {_fmt(majority.get(key))} |"
            )
    for key in ("latency_ms_batch1", "latency_ms_batched", "model_size_mb"):
        if key in this:
            lines.append(f"| {key} | {_fmt(this[key])} | | | |")
    lines += ["", decision.markdown("Gate decision").replace("# ", "## ", 1).rstrip(), ""]
    lines += task.card_lines(cfg)
    return "\n".join(lines)
