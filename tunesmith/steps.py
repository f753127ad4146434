"""Each step declares once what it reads and writes; everything else derives from that.

`DECLARATIONS` below holds one `Step(...)` per step (the function in `tasks/<step>.py`): the
config keys it reads, the folders (and the source, the base model) it reads, the folders it
writes, and the task-type protocol functions it calls. The table lives here, in the library,
because the library derives everything from it and never imports a step. From that one
declaration come
- the Prefect cache key (`tunesmith.fingerprint.step_key`),
- the `dvc.yaml` stage: deps, outs and the per-step resolved inputs file
  (`tunesmith.dvcfile`, written by `tunesmith dvc-yaml`; a test fails on drift),
- the step's code dependencies (`tunesmith.codedeps`: the modules it imports), and
- what the step may touch: it is called with a view of the config that answers only the
  declared keys and folders, and of the task type that offers only the declared functions;
  anything else raises `UndeclaredRead` naming the key, so a missing declaration fails
  every test that runs the step instead of going stale silently.
A task type adds keys and inputs it needs for a step through its `READS` and `INPUTS`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tunesmith import objectives

if TYPE_CHECKING:
    from tunesmith.config import Config

F = TypeVar("F", bound=Callable[..., Any])

STEPS = ("ingest", "clean", "validate", "tokenize", "train", "evaluate", "register")

# The file in each output folder that stands for its content (its digest or summary): what
# a downstream step's cache key reads, and what says the folder is complete.
MARKERS = {
    "raw": "manifest.json", "clean": "report.json", "validation": "verdict.json",
    "tokenized": "meta.json", "model": "train_summary.json", "eval": "metrics.json",
}
# Inputs that are not an output folder of another step.
SOURCE, BASE_MODEL = "source", "base_model"

# Read by every step, so not declared: the dataset's identity and where its folders are.
ALWAYS = frozenset({"name", "root", "task", "paths"})
ALIASES = {"validate_": "validate", "register_": "register"}  # Config field -> YAML key


@dataclass(frozen=True)
class Step:
    """What one step reads and writes (see the module docstring)."""

    name: str
    reads: tuple[str, ...]  # config keys: "train" (a section), "train.prompt_template" (one key)
    inputs: tuple[str, ...]  # DatasetDirs folders, SOURCE or BASE_MODEL
    outputs: tuple[str, ...]  # DatasetDirs folders (register writes to MLflow only)
    uses: tuple[str, ...]  # task-type protocol functions it calls


DECLARATIONS = {
    "ingest": Step(
        name="ingest",
        reads=("source", "columns"),
        inputs=(SOURCE,),
        outputs=("raw",),
        uses=("read_source",),
    ),
    "clean": Step(
        name="clean",
        reads=("clean", "labels", "label_map", "source.path"),
        inputs=("raw",),
        outputs=("clean",),
        uses=("clean",),
    ),
    "validate": Step(
        name="validate",
        reads=("validate", "labels", "clean.split"),
        inputs=("clean",),
        outputs=("validation",),
        uses=("suite",),
    ),
    "tokenize": Step(
        name="tokenize",
        reads=("tokenize", "model", "labels"),
        inputs=("clean", "validation", BASE_MODEL),  # validation: only a verdict, for the order
        outputs=("tokenized",),
        uses=("encode",),
    ),
    "train": Step(
        name="train",
        reads=("train", "model", "labels", "tune"),  # tune: the search of `train.lr: auto`
        inputs=("tokenized", BASE_MODEL),
        outputs=("model",),
        uses=("load_model", "training_data", "collator", "metric_fns", "best_metric",
              "finish_val_metrics"),
    ),
    "evaluate": Step(
        name="evaluate",
        # register.primary_metric: the baseline comparison uses the gate's metric.
        reads=("evaluate", "labels", "tokenize.max_length", "register.primary_metric",
               "tracking", "train.seed"),
        inputs=("clean", "model"),
        outputs=("eval",),
        uses=("score_candidate", "score_baseline", "score_majority", "score_champion"),
    ),
    "register": Step(
        name="register",
        # train, model.base, description, source.path, labels: the model card tells them.
        reads=("register", "tracking", "labels", "description", "source.path", "model.base",
               "train", "tokenize.max_length", "evaluate.batch_size"),
        inputs=("eval", "model", "clean"),
        outputs=(),
        uses=("log_model", "log_baseline", "sample_inputs", "serve", "card_lines"),
    ),
}


class UndeclaredRead(RuntimeError):
    """A step touched a config key, folder or task function its declaration leaves out."""


def declaration(step: str) -> Step:
    if step not in DECLARATIONS:
        raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    return DECLARATIONS[step]


def reads(task: str, step: str) -> tuple[str, ...]:
    """The config keys `step` reads for a dataset of type `task` (sorted, no duplicates)."""
    declared = declaration(step).reads + objectives.extra_reads(task, step)
    return tuple(sorted(set(declared)))


def inputs(task: str, step: str) -> tuple[str, ...]:
    extra = tuple(objectives.get(task).INPUTS.get(step, ()))
    return tuple(dict.fromkeys(declaration(step).inputs + extra))


def resolved_reads(cfg: Config, step: str) -> dict[str, Any]:
    """{key: value} of every key `step` reads, resolved for `cfg` (JSON values)."""
    dump = cfg.model_dump(mode="json", by_alias=True, exclude={"root"})
    out: dict[str, Any] = {"task": cfg.task}
    for key in reads(cfg.task, step):
        node: Any = dump
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def resolved_json(cfg: Config, step: str) -> str:
    """`resolved_reads` as canonical JSON: the text of the DVC inputs file and of the key."""
    return json.dumps(resolved_reads(cfg, step), indent=1, sort_keys=True) + "\n"


# --------------------------------------------------------------------- what a step may touch


def _covered(key: str, allowed: frozenset[str]) -> bool:
    return key in allowed or any(key.startswith(a + ".") for a in allowed)


class ConfigView:
    """`cfg` as a step sees it: declared keys answer, anything else raises UndeclaredRead."""

    __slots__ = ("_target", "_allowed", "_step", "_prefix", "_dirs")

    def __init__(self, target: Any, allowed: frozenset[str], step: str, prefix: str = "",
                 dirs: frozenset[str] = frozenset()) -> None:
        for slot, value in zip(self.__slots__, (target, allowed, step, prefix, dirs),
                               strict=True):
            object.__setattr__(self, slot, value)

    def __getattr__(self, attr: str) -> Any:
        key = self._prefix + ALIASES.get(attr, attr)
        if not self._prefix and key == "dirs":
            return DirsView(self._target.dirs, self._dirs, self._step)
        if (not self._prefix and key in ALWAYS) or _covered(key, self._allowed):
            return getattr(self._target, attr)
        if any(a.startswith(key + ".") for a in self._allowed):
            return ConfigView(getattr(self._target, attr), self._allowed, self._step, key + ".")
        raise UndeclaredRead(
            f"step {self._step} reads config key {key!r}, which neither its "
            "declaration's reads (tunesmith/steps.py) nor the task type's READS declares")

    def __setattr__(self, attr: str, value: Any) -> None:
        raise UndeclaredRead(f"step {self._step} may not change the config ({attr})")


class DirsView:
    """`cfg.dirs` for one step: its declared input and output folders (and `state`)."""

    __slots__ = ("_dirs", "_allowed", "_step")

    def __init__(self, dirs: Any, allowed: frozenset[str], step: str) -> None:
        object.__setattr__(self, "_dirs", dirs)
        object.__setattr__(self, "_allowed", allowed | {"state"})
        object.__setattr__(self, "_step", step)

    def __getattr__(self, attr: str) -> Path:
        if attr in self._allowed:
            return getattr(self._dirs, attr)
        raise UndeclaredRead(
            f"step {self._step} uses folder {attr!r}, which its declaration "
            "(tunesmith/steps.py) leaves out of inputs and outputs (and the task type's INPUTS)")


class TaskView:
    """The task type as a step sees it: the protocol functions it declared in `uses`."""

    __slots__ = ("_module", "_allowed", "_step")

    def __init__(self, module: Any, allowed: frozenset[str], step: str) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_step", step)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._module, attr)
        if attr.isupper() or attr in self._allowed:  # constants (NAME, ROLES, ...) are free
            return value
        raise UndeclaredRead(f"step {self._step} calls task function {attr!r}, which "
                             "its declaration (tunesmith/steps.py) leaves out of uses")


def view(cfg: Config, step: str) -> ConfigView:
    """The config `step` is called with (see ConfigView); a view is returned unchanged."""
    if isinstance(cfg, ConfigView):
        return cfg
    spec = declaration(step)
    folders = frozenset(d for d in inputs(cfg.task, step) + spec.outputs if d in MARKERS)
    return ConfigView(cfg, frozenset(reads(cfg.task, step)), step, dirs=folders)


def task_of(cfg: Any, step: str) -> Any:
    """The task type of `cfg` as `step` may use it (only the functions in its `uses`)."""
    return TaskView(objectives.get(cfg.task), frozenset(declaration(step).uses), step)


def narrowed(func: F) -> F:
    """Decorate a step function: whoever calls it (the runner, a test, `dataset check`),
    it runs with `view(cfg, step)`, the step named after the function."""

    @functools.wraps(func)
    def step_function(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        return func(view(cfg, func.__name__), *args, **kwargs)

    return step_function  # type: ignore[return-value]


def stage_name(dataset: str, step: str) -> str:
    """The dvc.yaml stage of `step` for `dataset` (also `NAME-inputs`)."""
    return f"{dataset}-{step}"


def output_dir(cfg: Config, step: str) -> Path | None:
    """The folder holding the step's `logged.json` (its first output), None for register."""
    outputs = declaration(step).outputs
    return getattr(cfg.dirs, outputs[0]) if outputs else None
