"""Thin MLflow registry side effects: register, read and move aliases, load; and the
pieces every task type's logging shares (`pins`, `no_example_hint`). Each task type logs its
own model: tunesmith/objectives/*/registering.py.

The registered model of a dataset is named after the dataset. Aliases: `challenger` (the
latest evaluated version) and `champion` (what `predict` serves).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem
from tunesmith.tracking import configure, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def version_for(cfg: Config, alias: str) -> ModelVersion | None:
    """The version holding `alias` in the dataset's registered model, or None."""
    client = configure(cfg)
    try:
        return client.get_model_version_by_alias(cfg.name, alias)
    except MlflowException:
        return None


def get_version(cfg: Config, version: int) -> ModelVersion:
    """Version `version` of the dataset's model, or a one-line error naming it."""
    try:
        return configure(cfg).get_model_version(cfg.name, str(version))
    except MlflowException:
        raise EnvironmentProblem(
            f"registered model {cfg.name!r} has no version {version} ({tracking_uri(cfg)})"
        ) from None


def pins() -> list[str]:
    """Pinned to what trained it; the CPU build of torch serves fine anywhere."""
    import pandas as pd
    import torch
    import transformers

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        f"pandas=={pd.__version__}",
    ]


@contextlib.contextmanager
def no_example_hint() -> Iterator[None]:
    """MLflow's "An input example was not provided" UserWarning, silenced for the models
    that have a signature and no possible example (image paths exist only where logged)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided",
                                category=UserWarning)
        yield


def smoke_test(uri: str, inputs: Any, expect: tuple[str, ...], serve: Any) -> None:
    """Load the logged model the way `predict` will and `serve` it `inputs`, or raise.

    MLflow's own check of the input example only warns on failure, and a version that
    cannot load must never be registered, let alone become champion.
    """
    try:
        # No requirements check: they were just inferred from this environment.
        out = serve(mlflow.pyfunc.load_model(uri, suppress_warnings=True), inputs,
                    {"max_new_tokens": 8})
    except Exception as exc:  # noqa: BLE001 - whatever breaks, the model is unusable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EnvironmentProblem(
            f"{uri}: the logged model does not load and predict: {first}"
        ) from exc
    if tuple(out.columns[: len(expect)]) != tuple(expect) or len(out) != len(inputs):
        raise EnvironmentProblem(f"{uri}: the logged model returned {list(out.columns)}")


def versions_of_job(cfg: Config, job: str) -> dict[str, ModelVersion]:
    """{model.family: version} of the versions register made for `job` (its step key): the
    ones a killed register left, which the next one finishes instead of duplicating."""
    if not job:
        return {}
    client = configure(cfg)
    try:
        found = client.search_model_versions(f"name = '{cfg.name}'")
    except MlflowException:
        return {}
    return {mv.tags.get("model.family", "fine-tuned"): mv for mv in found
            if mv.tags.get("register.job") == job}


def register_version(cfg: Config, uri: str, tags: dict[str, str] | None = None) -> ModelVersion:
    """A new version of the dataset's registered model from a logged model uri, created
    with `tags` in the same call (a version never exists without them)."""
    client = configure(cfg)
    try:
        client.get_registered_model(cfg.name)
    except MlflowException:
        client.create_registered_model(
            cfg.name, description=f"tunesmith {cfg.task} model for dataset {cfg.name}"
        )
    # register_model waits until the version is READY (a remote store may copy first).
    return mlflow.register_model(uri, cfg.name, tags=tags)


def set_alias(cfg: Config, alias: str, version: int | str) -> None:
    configure(cfg).set_registered_model_alias(cfg.name, alias, str(version))


def move_champion(cfg: Config, version: int, action: str, note: str = "") -> int | None:
    """Point `champion` at `version` by hand (promote/rollback); returns the previous version.

    The move is recorded on the version as tags (`<action>.at`, `<action>.from`) and as a
    line appended to its description.
    """
    client = configure(cfg)
    mv = get_version(cfg, version)
    before = version_for(cfg, CHAMPION)
    previous = int(before.version) if before else None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    client.set_model_version_tag(cfg.name, mv.version, f"{action}.at", stamp)
    client.set_model_version_tag(cfg.name, mv.version, f"{action}.from", str(previous))
    client.set_model_version_tag(cfg.name, mv.version, "gate.decision", f"manual {action}")
    line = f"{stamp}: manual {action} to champion (was version {previous}). {note}".strip()
    description = f"{mv.description}\n\n{line}" if mv.description else line
    client.update_model_version(cfg.name, mv.version, description=description)
    set_alias(cfg, CHAMPION, mv.version)  # last: a failure above leaves the champion alone
    return previous


def load_pyfunc(cfg: Config, alias: str = CHAMPION, *, check_requirements: bool = True) -> Any:
    """Load `models:/NAME@alias` as a pyfunc model, or raise a one-line error.

    `check_requirements`: MLflow warns when the model's pinned packages differ from this
    environment's, which `predict` users need to see. evaluate re-scoring the champion
    turns it off: the gate compares the two models in this environment whatever their
    pins, and the check scans every installed distribution (0.8 s, the first time in a
    process, measured on the SST-2 champion)."""
    configure(cfg)
    if version_for(cfg, alias) is None:
        raise EnvironmentProblem(
            f"registered model {cfg.name!r} has no version with alias {alias!r} "
            f"({tracking_uri(cfg)}): run the pipeline or `tunesmith promote` first"
        )
    return mlflow.pyfunc.load_model(model_uri(cfg.name, alias),
                                    suppress_warnings=not check_requirements)
