"""Prefect artifacts a reviewer reads: validation summary, metrics table, gate decision, the
MLflow run's link; and the Prefect flow run's id and page as tags on that MLflow run."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from tunesmith import tracking
from tunesmith.config import Config
from tunesmith.jsonio import read_json


def _key(cfg: Config, what: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return f"{cfg.name}-{what}".lower().replace("_", "-")


def publish_validation(cfg: Config, failed: bool) -> None:
    summary = cfg.dirs.validation / "summary.md"
    # summary.md carries its own heading with the verdict.
    body = summary.read_text(encoding="utf-8") if summary.is_file() else (
        f"# Validation of {cfg.name}: {'FAILED' if failed else 'passed'}\n\n(no summary written)")
    create_markdown_artifact(
        key=_key(cfg, "validation"), markdown=body,
        description=f"Great Expectations results for {cfg.name}",
    )


def publish_eval(cfg: Config) -> None:
    path = cfg.dirs.eval / "metrics.json"
    if not path.is_file():
        return
    metrics = read_json(path)
    rows = [{"metric": k, "value": round(v, 4)} for k, v in _flat(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    create_table_artifact(key=_key(cfg, "metrics"), table=rows,
                          description=f"Test-set metrics of the {cfg.name} candidate")


def publish_register(cfg: Config, result: Any) -> None:
    decision = getattr(result, "decision", None)
    reasons = getattr(decision, "reasons", None) or getattr(result, "reasons", []) or []
    promoted = getattr(decision, "promote", getattr(result, "promoted", None))
    verdict = getattr(result, "verdict", None) or []
    if verdict:  # the register step's verdict (tunesmith.verdict): every version it registered
        lines = [f"# Gate decision for {verdict[0]}", "", "```", *verdict[1:], "```"]
    else:
        lines = [f"# Gate decision for {cfg.name}: "
                 f"{'PROMOTED' if promoted else 'not promoted'}", ""]
        lines += [f"- version: {getattr(result, 'version', '?')}"]
        lines += [f"- {r}" for r in reasons]
    create_markdown_artifact(key=_key(cfg, "gate"), markdown="\n".join(lines),
                             description="Champion/challenger gate")
    run_id = getattr(result, "run_id", None)
    if run_id:
        create_link_artifact(key=_key(cfg, "mlflow-run"), link=tracking.run_link(cfg, run_id),
                             description="The MLflow run of this pipeline run")


def tag_mlflow_run(cfg: Config, run_id: str, flow_run_id: str, flow_run_name: str | None,
                   flow_run_url: str | None) -> None:
    """Tag the pipeline's MLflow run with this flow run, so a reviewer in the MLflow UI finds
    the orchestration side; the page only when Prefect has a UI (the temporary API has none)."""
    tags = {"prefect.flow_run_id": flow_run_id, "prefect.flow_run_name": flow_run_name or ""}
    if flow_run_url and flow_run_url.startswith(("http://", "https://")):
        tags["prefect.flow_run_url"] = flow_run_url
    tracking.tag_run(cfg, run_id, tags)


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
