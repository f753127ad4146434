"""The model card logged with every registered version (markdown)."""

from __future__ import annotations

from typing import Any

from tunesmith.config import Config
from tunesmith.registry.gate import Decision

_HEADLINE = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "mcc", "roc_auc",
             "pr_auc", "ece", "eval_loss", "perplexity")


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
) -> str:
    """Data, method, metrics vs baseline and champion, the gate decision, use and limits
    (the last two from the task type's `card_lines`)."""
    tags = data_tags or {}
    champion = report.get("champion") or {}
    baseline = report.get("baseline") or {}
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
    lines += [
        "",
        "## Method",
        "",
        f"- base model: `{cfg.model.base}`, method `{t.method}`",
        f"- epochs {t.epochs:g}, lr {t.lr:g}, batch {t.batch_size}, scheduler {t.scheduler}, "
        f"max length {cfg.tokenize.max_length}, seed {t.seed}",
        f"- MLflow run: `{run_id}`",
    ]
    if train_summary:
        shown = {k: v for k, v in train_summary.items() if isinstance(v, (int, float, str))}
        lines.append("- training: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    champ_label = f"champion v{champion['version']}" if champion.get("version") else "champion"
    lines += [
        "",
        "## Metrics (test split)",
        "",
        f"| metric | this model | {baseline.get('name', task.BASELINE)} baseline | "
        f"{champ_label} (re-scored) |",
        "| --- | --- | --- | --- |",
    ]
    for key in _HEADLINE:
        if key in report:
            lines.append(
                f"| {key} | {_fmt(report.get(key))} | {_fmt(baseline.get(key))} | "
                f"{_fmt(champion.get(key))} |"
            )
    for key in ("latency_ms_batch1", "latency_ms_batched", "model_size_mb"):
        if key in report:
            lines.append(f"| {key} | {_fmt(report[key])} | | |")
    lines += ["", decision.markdown("Gate decision").replace("# ", "## ", 1).rstrip(), ""]
    lines += task.card_lines(cfg)
    return "\n".join(lines)
