"""Print what one pipeline run holds in MLflow: params, metrics, tags, inputs, artifacts.

    python scripts/show_mlflow_run.py --dataset sms_spam [--run-id ID] [--root DIR]

Without --run-id: the newest run of the dataset's experiment. Reads the same tracking store
the pipeline writes to (`tracking.uri` in params.yaml, or MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlflow.tracking import MlflowClient

from tunesmith import tracking
from tunesmith.config import find_root, load_config

# Tags a reviewer looks for first; the rest are listed after them.
KEY_TAGS = ("git.commit", "data.source", "data.raw_sha256", "data.train.digest",
            "data.val.digest", "data.test.digest", "validation.success", "eval.beats_baseline",
            "gate.decision", "registered.version")
SAMPLE_PARAMS = ("model.base", "train.method", "train.lr", "train.epochs", "train.seed",
                 "clean.dedup", "register.primary_metric")


def _newest_run(client: MlflowClient, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} in {client.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise SystemExit(f"experiment {experiment!r} has no runs")
    return runs[0].info.run_id


def _artifact_tree(client: MlflowClient, run_id: str, path: str = "", depth: int = 0,
                   max_files: int = 12) -> list[str]:
    """Indented listing; long folders (e.g. Data Docs, model files) are cut after max_files."""
    lines, items = [], client.list_artifacts(run_id, path or None)
    files = [a for a in items if not a.is_dir]
    for item in [a for a in items if a.is_dir]:
        lines.append(f"{'  ' * depth}{item.path.rsplit('/', 1)[-1]}/")
        lines += _artifact_tree(client, run_id, item.path, depth + 1, max_files)
    for item in files[:max_files]:
        lines.append(f"{'  ' * depth}{item.path.rsplit('/', 1)[-1]}  ({item.file_size} B)")
    if len(files) > max_files:
        lines.append(f"{'  ' * depth}... {len(files) - max_files} more files")
    return lines


def show(dataset: str, run_id: str | None = None, root: Path | None = None) -> str:
    """The listing as text (what main prints)."""
    cfg = load_config(dataset, root or find_root())
    client = tracking.configure(cfg)
    run_id = run_id or _newest_run(client, cfg.name)
    run = client.get_run(run_id)
    info, data = run.info, run.data
    seconds = ((info.end_time or info.start_time) - info.start_time) / 1000
    out = [f"run {info.run_id} ({info.run_name}) in experiment {cfg.name}: {info.status}, "
           f"{seconds:.0f}s", f"store: {tracking.tracking_uri(cfg)}"]

    out.append(f"\nparams: {len(data.params)}, e.g.")
    out += [f"  {k} = {data.params[k]}" for k in SAMPLE_PARAMS if k in data.params]

    metrics = data.metrics
    system = [k for k in metrics if k.startswith("system/")]
    curves = sorted(k for k in metrics if k.startswith("curve/"))
    out.append(f"\nmetrics: {len(metrics)} ({len(system)} system/*, {len(curves)} curve/* "
               "step series)")
    for key in sorted(k for k in metrics if k not in system and k not in curves):
        out.append(f"  {key} = {metrics[key]:.6g}")
    for key in curves:
        history = client.get_metric_history(run_id, key)
        out.append(f"  {key}: {len(history)} steps, last {metrics[key]:.4g}")

    out.append("\ntags:")
    tags = {k: v for k, v in data.tags.items() if not k.startswith("mlflow.")}
    for key in [*[k for k in KEY_TAGS if k in tags], *sorted(set(tags) - set(KEY_TAGS))]:
        value = tags[key].replace("\n", " | ")
        out.append(f"  {key} = {value[:110]}{'...' if len(value) > 110 else ''}")

    out.append("\ninputs (mlflow.log_input):")
    for item in run.inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        out.append(f"  {item.dataset.name} [{context}] digest {item.dataset.digest} "
                   f"source {item.dataset.source[:80]}")

    out.append("\nregistered model versions from this run:")
    for found in client.search_model_versions(f"run_id = '{run_id}'"):
        mv = client.get_model_version(found.name, found.version)  # search leaves out aliases
        aliases = ", ".join(getattr(mv, "aliases", []) or []) or "no alias"
        out.append(f"  {mv.name} v{mv.version} ({aliases}) source {mv.source}")
        data_tags = sorted(k for k in mv.tags if k.startswith(("data.", "dvc.", "git.")))
        out.append(f"    lineage tags: {', '.join(data_tags)}")

    out.append("\nartifacts:")
    out += [f"  {line}" for line in _artifact_tree(client, run_id)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-id")
    parser.add_argument("--root", type=Path, help="project root (default: found from cwd)")
    args = parser.parse_args()
    print(show(args.dataset, args.run_id, args.root))


if __name__ == "__main__":
    main()
