"""What a step logs to the pipeline's MLflow run, as plain data carried by its result.

Each step returns a result with a `logged: Logged`; the step runner writes it next to the
step's output (`logged.json`) and `tunesmith.tracking.log` writes it to MLflow. On disk it
lets a later process (a `dvc repro` stage, or a flow run whose earlier steps were cached)
log what a step that did not run this time recorded when it did. No MLflow import here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "logged.json"


@dataclass
class Logged:
    """Metrics, params, tags and artifacts of one step; paths relative to the project root."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # (file or folder, artifact folder in the run)
    artifacts: list[tuple[str, str]] = field(default_factory=list)
    # (artifact file name, text): small generated documents (gate decision, model card)
    texts: list[tuple[str, str]] = field(default_factory=list)
    # MLflow datasets: {"path": parquet file, "name", "digest", "context", "targets"}
    inputs: list[dict[str, Any]] = field(default_factory=list)
    # (metric, value, step): a curve over training steps
    series: list[tuple[str, float, int]] = field(default_factory=list)
    # (artifact file, JSON-lines file): a table in the run's UI (mlflow.log_table)
    tables: list[tuple[str, str]] = field(default_factory=list)

    def merged(self, other: Logged) -> Logged:
        """Both records in one (the other's values win on equal keys)."""
        return Logged(
            metrics={**self.metrics, **other.metrics}, params={**self.params, **other.params},
            tags={**self.tags, **other.tags}, artifacts=[*self.artifacts, *other.artifacts],
            texts=[*self.texts, *other.texts], inputs=[*self.inputs, *other.inputs],
            series=[*self.series, *other.series], tables=[*self.tables, *other.tables],
        )


def finite(values: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of `values` as floats (MLflow rejects NaN and strings)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v
            and abs(float(v)) != float("inf")}


def relative(path: Path, root: Path) -> str:
    """`path` relative to the project root when inside it (a moved project still logs)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def write(logged: Logged, folder: Path) -> Path:
    path = Path(folder) / FILE
    path.write_text(json.dumps(asdict(logged), indent=1, sort_keys=True, default=str) + "\n",
                    encoding="utf-8")
    return path


def read(folder: Path) -> Logged | None:
    """The record written by `write` in `folder`, or None when there is none (or it is bad)."""
    try:
        data = json.loads((Path(folder) / FILE).read_text(encoding="utf-8"))
        return Logged(
            metrics=dict(data.get("metrics", {})), params=dict(data.get("params", {})),
            tags=dict(data.get("tags", {})),
            artifacts=[tuple(a) for a in data.get("artifacts", [])],
            texts=[tuple(t) for t in data.get("texts", [])],
            inputs=list(data.get("inputs", [])),
            series=[tuple(s) for s in data.get("series", [])],
            tables=[tuple(t) for t in data.get("tables", [])],
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return None
