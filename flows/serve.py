"""`tunesmith serve`: every dataset's scheduled retrain deployment, served from one process.

For teams without workers. With workers, `prefect deploy --all` uses prefect.yaml instead
(the same flow, one deployment per dataset, on a process work pool).
"""

from __future__ import annotations

from prefect import serve

from tunesmith.config import dataset_names, find_root, load_config
from tunesmith.flows.retrain import retrain


def deployments():
    """One deployment per dataset, on the dataset's cron (default nightly), one run at a time."""
    root = find_root()
    out = []
    for name in dataset_names(root):
        cfg = load_config(name, root)
        out.append(retrain.to_deployment(
            name=f"retrain-{name}", parameters={"dataset": name}, cron=cfg.schedule,
            concurrency_limit=1, tags=["tunesmith", name],
            description=f"Nightly retrain of {name}: {cfg.description}",
        ))
    return out


def serve_all() -> None:
    """Block serving the deployments until interrupted."""
    serve(*deployments())
