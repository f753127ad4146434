"""Task types ("objectives": text classification, causal LM, image classification): one
package each, behind one protocol (`TaskType` below) in two halves, `TrainingCore` (what
tunesmith/training calls) and `Pipeline` (what the steps and commands call).

A package holds all of its task's code: the protocol functions in its `__init__.py`, and
its data, validation suite, training pieces, evaluation and served model next to them.
Text and image classification share `classification/` (the protocol functions that are the
same for both, and the classifier evaluation). The steps (`tasks/<step>.py`) and the
training core call a task type through the protocol and never branch on `cfg.task`;
adding a task type (token classification, regression, ...) is one new package here, one
entry in `MODULES` and its tests (docs/architecture.md says how).

A package's `__init__.py` imports nothing heavy at module level (no pandas, torch,
pydantic, GX, MLflow): the training core imports it on an accelerator machine that has
only torch, transformers, peft, accelerate, pandas and pyarrow, and `tunesmith dvc-yaml` /
the step cache keys read its `READS` without paying for imports. What each protocol
function needs it imports inside, so a step's code dependencies (tunesmith.codedeps) are
only the functions it calls.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from tunesmith.config import Config
    from tunesmith.training.options import TrainOptions
    from tunesmith.validation.suites import Batch

MODULES: dict[str, str] = {
    "text-classification": "tunesmith.objectives.text_classification",
    "causal-lm": "tunesmith.objectives.causal_lm",
    "image-classification": "tunesmith.objectives.image_classification",
}


class TrainingCore(Protocol):
    """What tunesmith/training calls: on an accelerator machine, with only torch,
    transformers, peft, accelerate, pandas and pyarrow installed."""

    NAME: str
    LABELLED: bool  # classes listed in `labels` (at least two), a head sized to them
    PEFT_TASK: str | None  # peft TaskType of a LoRA wrapper (None: a plain PeftModel)
    # train.lr defaults this task overrides, {optimizer: {method: rate}} (empty: the common
    # table, tunesmith.training.options.LR_DEFAULTS)
    LR_DEFAULTS: Mapping[str, Mapping[str, float]]
    # train.batch_tokens when unset, per device ("cpu", "cuda"); absent: 0, batch_size rows
    BATCH_TOKENS: Mapping[str, int]

    # train (training core, no pydantic): model, data, collator, metrics
    def load_model(self, base: str, labels: list[str], opts: TrainOptions, **kw: Any) -> Any: ...
    def training_data(self, tokenized: Path, base: str, opts: TrainOptions) -> tuple: ...
    def collator(self, processing_class: Any, opts: TrainOptions) -> Any: ...
    def metric_fns(self) -> tuple[Any, Any]: ...
    # the training loss, model(**inputs) -> loss; None: the model's own (its `labels` loss)
    def training_loss(self) -> Any | None: ...
    def best_metric(self, opts: TrainOptions) -> tuple[str, bool]: ...
    def finish_val_metrics(self, metrics: dict[str, float]) -> dict[str, float]: ...


class Pipeline(Protocol):
    """What the steps and commands call (pydantic Config, pandas, MLflow inside)."""

    # `columns.<role>` a dataset of this type maps: one complete set of these
    ROLE_SETS: tuple[tuple[str, ...], ...]
    MEASURES: frozenset[str]  # metrics its evaluation reports; thresholds on others are skipped
    BASELINE: str  # the named baseline evaluate scores and the gate compares with
    BASELINE_MIN_GAIN: float  # relative gain over it the gate needs (0: a tie passes)
    PREDICTS: tuple[str, ...]  # first columns the served model returns
    DEFAULT_BASE: str  # the named base `model.base` means when unset
    PRIMARY_METRIC: str  # the gate's metric when register.primary_metric is unset
    # Config keys, and folders, a step reads for this task beyond the step's own declaration.
    READS: Mapping[str, tuple[str, ...]]
    INPUTS: Mapping[str, tuple[str, ...]]

    # before any step: a problem with a base model's config.json for this task, or None
    def check_base(self, config: dict) -> str | None: ...

    # dataset add: the YAML's columns/labels for a source and the --<role>-col options
    def describe(self, root: Path, src: Any, columns: dict[str, str | None],
                 label_map: dict[str, str]) -> dict: ...

    # dataset add: settings measured on the data (written where the user set none) and the
    # lines saying what was chosen
    def measure(self, cfg: Config) -> tuple[dict, list[str]]: ...

    # ingest: the source's rows (as read) and the manifest fields
    def read_source(self, cfg: Config, staging: Path) -> tuple[pd.DataFrame, dict]: ...

    # clean: write {train,val,test}.parquet (+ any files) into staging, return the report
    def clean(self, cfg: Config, staging: Path) -> dict: ...

    # dataset check: what the clean report says, as lines for a person
    def report_lines(self, report: dict) -> list[str]: ...

    # validate: the GX batches for the clean splits
    def suite(self, cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]: ...

    # tokenize: encode the splits into staging; return the token report
    def encode(self, cfg: Config, base: str, staging: Path) -> dict: ...

    # evaluate: the candidate (writing its plots into `out`), the baseline (a servable one
    # saves its fitted model under `out` when `keep(its scores)`: register serves it only
    # when it beat the candidate), the majority-class baseline (classification; None
    # otherwise), the champion
    def score_candidate(self, cfg: Config, out: Path) -> dict: ...
    def score_baseline(self, cfg: Config, out: Path,
                       keep: Callable[[dict], bool]) -> dict | None: ...
    def score_majority(self, cfg: Config) -> dict | None: ...
    def score_champion(self, cfg: Config) -> dict | None: ...

    # register / predict: log the MLflow model; inputs for its smoke test and for predict
    def log_model(self, cfg: Config, model_dir: Path) -> Any: ...
    # the baseline evaluate saved under `eval_dir` as a served model (None: not servable)
    def log_baseline(self, cfg: Config, eval_dir: Path) -> Any | None: ...
    def sample_inputs(self, cfg: Config) -> pd.DataFrame: ...
    def predict_inputs(self, cfg: Config, values: list[str],
                       table: Path | None) -> pd.DataFrame: ...
    def serve(self, model: Any, inputs: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame: ...
    def input_columns(self, cfg: Config) -> list[str]: ...
    def card_lines(self, cfg: Config) -> list[str]: ...


class TaskType(TrainingCore, Pipeline, Protocol):
    """What a task package provides: both halves. Each function is called by one step."""


PROTOCOL = tuple(dict.fromkeys(
    name for half in (TrainingCore, Pipeline)
    for name in (*half.__annotations__, *vars(half)) if not name.startswith("_")))
TRAINING_CORE = tuple(name for name in PROTOCOL if name in vars(TrainingCore)
                      or name in TrainingCore.__annotations__)


def get(name: str) -> TaskType:
    """The module implementing task type `name` (config validation has checked the name)."""
    try:
        return importlib.import_module(MODULES[name])  # type: ignore[return-value]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {', '.join(MODULES)}") from None


def extra_reads(name: str, step: str) -> tuple[str, ...]:
    """Config keys `step` reads for task type `name` on top of its own declaration."""
    return tuple(get(name).READS.get(step, ()))


def module_file(name: str) -> Path:
    """The protocol file of task type `name`, its package's `__init__.py` (a code dependency
    of every step for it)."""
    return Path(__file__).parent / MODULES[name].rsplit(".", 1)[1] / "__init__.py"
