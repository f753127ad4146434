"""Typed configuration: `params.yaml` defaults, `datasets/NAME.yaml` overrides, `--set` last.

Both files share one namespace: a dataset file may set any section of `params.yaml`
(e.g. `train: {lr: 1e-4}`) besides the keys that only a dataset has (`source`, `columns`,
`labels`, ...). `load_config` merges them and validates the result once; every unknown
key or bad value is reported as one line naming the file and the dotted key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tunesmith import objectives
from tunesmith.errors import ConfigError
from tunesmith.training.options import TrainOptions, resolve_defaults

TaskType = Literal["text-classification", "causal-lm", "image-classification"]
# json: one array of objects (the Alpaca file shape); folder: <label>/*.png
# files: a folder of tables named by split (train.csv, dev.tsv, test.jsonl, ...)
SourceFormat = Literal["csv", "tsv", "json", "jsonl", "parquet", "hf", "folder", "files"]
PARAMS_FILE = "params.yaml"
DATASETS_DIR = "datasets"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Strict):
    """Where the raw data lives and how to read it."""

    path: str  # local path (relative to the project root) or http(s) URL
    format: SourceFormat | None = None  # None: inferred from the file extension
    delimiter: str | None = None  # None: "," for csv, "\t" for tsv
    encoding: str = "utf-8"
    header: bool = True
    column_names: list[str] = Field(default_factory=list)  # when header is false
    max_download_mb: int = Field(2048, ge=1)  # a URL source larger than this is refused


class ColumnsConfig(Strict):
    """Which source columns hold what, per task type."""

    text: str | None = None
    label: str | None = None
    image: str | None = None
    # causal-lm: a chat column (`messages` of {role, content}, or ShareGPT {from, value}), or
    # Alpaca's instruction (+ optional input) and response, or a prompt and a response
    messages: str | None = None
    instruction: str | None = None
    input: str | None = None
    prompt: str | None = None
    response: str | None = None
    split: str | None = None  # a column naming each row's split (train, val, test, dev, ...)


class SplitConfig(Strict):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = Field(42, ge=0)
    # Splits the source already has (train/ and val/ folders, per-split files, a split
    # column, a saved DatasetDict): keep them (its held-out split is the test split; val is
    # carved from train when none is given, train:val as above), or resplit everything.
    given: Literal["keep", "resplit"] = "keep"

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        if self.train == 0 or self.test == 0:
            raise ValueError("train and test fractions must be positive")
        return self


class CleanConfig(Strict):
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFKC"
    strip_html: bool = False
    lowercase: bool = False
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(5000, ge=1)
    dedup: bool = True
    drop_conflicting: bool = True
    min_image_size: int = Field(8, ge=1)  # image-classification: smaller width or height is dropped
    split: SplitConfig = Field(default_factory=SplitConfig)


class ValidateConfig(Strict):
    """Expectations checked by Great Expectations on every split."""

    min_rows: int = Field(20, ge=0)  # whole cleaned dataset
    max_rows: int | None = Field(None, ge=1)
    min_split_rows: int = Field(1, ge=0)
    max_text_chars: int = Field(5000, ge=1)
    min_text_chars: int = Field(1, ge=0)
    min_class_share: float = Field(0.02, ge=0, le=1)
    max_label_drift: float = Field(0.1, ge=0, le=1)  # |share_train - share_test| per class
    n_examples: int = Field(5, ge=0)  # offending rows shown per failed expectation
    # image-classification: share of ingested files that must decode, and the least width/height
    min_decodable_share: float = Field(0.9, ge=0, le=1)
    min_image_size: int = Field(8, ge=1)
    # causal-lm: the most rows tokenize.max_length may truncate (and may leave with no answer
    # token, which tokenize drops), as a share of all rows
    max_truncated_share: float = Field(0.1, ge=0, le=1)


class ModelConfig(Strict):
    # A path, a hub id or a named base (tunesmith.models.NAMED_BASES, offline); None: the
    # task type's DEFAULT_BASE (all-MiniLM-L6-v2, SmolLM2-135M-Instruct, efficientnet-lite0).
    base: str | None = None


class TokenizeConfig(Strict):
    max_length: int = Field(128, ge=8)
    batch_size: int = Field(2000, ge=1)


class TuneConfig(Strict):
    """The learning-rate search of `train.lr: auto` and `tunesmith tune` (tunesmith/tune.py):
    short trials on the train/val splits only, pruned on the per-epoch val metric."""

    trials: int = Field(6, ge=1)  # `tunesmith tune --trials N` overrides
    epochs: float = Field(2.0, gt=0)  # per trial; a trial below the median after an epoch stops
    # key -> "low:high[:log]" (numbers) or "a,b,c" (choices), e.g. {train.lr: "1e-5:1e-3:log"};
    # empty: train.lr log-uniform over [default / 10, default * 10] for the method
    space: dict[str, str] = Field(default_factory=dict)


class EvaluateConfig(Strict):
    batch_size: int = Field(64, ge=1)
    n_misclassified: int = Field(25, ge=0)
    latency_examples: int = Field(32, ge=1)
    baseline: bool = True  # TF-IDF + logistic regression on the same split


class RegisterConfig(Strict):
    """The champion gate."""

    thresholds: dict[str, float] = Field(default_factory=lambda: {"f1_macro": 0.0})
    # the candidate must beat the champion's primary metric by this much
    margin: float = Field(0.0, ge=0)
    primary_metric: str | None = None  # None: the task type's PRIMARY_METRIC
    require_beat_baseline: bool = True
    # Classification: when the classical baseline (TF-IDF+LR, pixels+histogram LR) beats the
    # fine-tuned model, register the baseline too and let it through the same gate, so the
    # best measured model is served (a worse model still never replaces the champion).
    baseline_can_win: bool = True
    # A candidate worse than the champion's own recorded test score by more than this share
    # of it fails (data worse for every model, e.g. shuffled labels; null: off).
    record_tolerance: float | None = Field(0.1, ge=0)


class TrackingConfig(Strict):
    # MLFLOW_TRACKING_URI wins over this when set.
    uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"


class FlowConfig(Strict):
    """Orchestration policy of the Prefect retrain flow."""

    retries: int = Field(2, ge=0)  # ingest (URL), evaluate and register (MLflow) only
    retry_delay_s: float = Field(5.0, ge=0)  # doubles on each retry
    train_timeout_s: int = Field(6 * 3600, ge=1)


class PathsConfig(Strict):
    """Where each step writes; dvc.yaml reads the same keys via ${paths.*}."""

    raw: str = "data/raw"
    clean: str = "data/clean"
    tokenized: str = "data/tokenized"
    models: str = "models"
    reports: str = "reports"
    state: str = ".tunesmith"  # run ids and locks; not versioned


class Config(Strict):
    """The resolved configuration of one dataset."""

    name: str
    task: TaskType = "text-classification"
    description: str = ""
    source: SourceConfig
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    labels: list[str] = Field(default_factory=list)
    label_map: dict[str, str] = Field(default_factory=dict)
    schedule: str = "0 2 * * *"
    paths: PathsConfig = Field(default_factory=PathsConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainOptions = Field(default_factory=TrainOptions)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    root: Path = Path(".")  # project root; set by the loader, never in YAML

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("labels", "label_map", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: Any) -> Any:
        # YAML reads `0: negative` with an int key; source labels are compared as strings.
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @model_validator(mode="after")
    def _columns_for_task(self) -> Config:
        task = objectives.get(self.task)
        given = {k for k, v in self.columns.model_dump().items() if v is not None}
        if not any(set(roles) <= given for roles in task.ROLE_SETS):
            wanted = " or ".join("columns." + " and columns.".join(r) for r in task.ROLE_SETS)
            raise ValueError(f"task {self.task} needs {wanted}")
        if task.LABELLED and len(self.labels) < 2:
            raise ValueError("labels: list at least two class names")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: names must be unique")
        if self.model.base is None:
            self.model.base = task.DEFAULT_BASE
        # train.lr / train.epochs null -> the method's defaults (tunesmith/training/options.py),
        # resolved here so cache keys, dvc.yaml inputs and MLflow params see the real value.
        resolve_defaults(self.train, task.LR_DEFAULTS)
        if self.train.class_weights != "none" and not task.LABELLED:
            raise ValueError(f"train.class_weights: {self.train.class_weights} needs classes; "
                             f"task {self.task} has none (use none)")
        if self.register_.primary_metric is None:
            self.register_.primary_metric = task.PRIMARY_METRIC
        return self

    @property
    def dirs(self) -> DatasetDirs:
        return DatasetDirs.of(self)


@dataclass(frozen=True)
class DatasetDirs:
    """Absolute output locations of one dataset, derived from `paths`."""

    raw: Path
    clean: Path
    validation: Path
    tokenized: Path
    model: Path
    eval: Path
    state: Path

    @classmethod
    def of(cls, cfg: Config) -> DatasetDirs:
        root, p, n = cfg.root, cfg.paths, cfg.name
        return cls(
            raw=root / p.raw / n,
            clean=root / p.clean / n,
            validation=root / p.reports / n / "validation",
            tokenized=root / p.tokenized / n,
            model=root / p.models / n,
            eval=root / p.reports / n / "eval",
            state=root / p.state / n,
        )


# ---------------------------------------------------------------- loading


def find_root(start: Path | None = None) -> Path:
    """The project root: $TUNESMITH_ROOT, else the nearest parent holding params.yaml."""
    if env := os.environ.get("TUNESMITH_ROOT"):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / PARAMS_FILE).is_file():
            return d
    raise ConfigError(f"no {PARAMS_FILE} in {here} or its parents: run inside a tunesmith project")


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def dataset_names(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / DATASETS_DIR).glob("*.yaml"))


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["train.lr=1e-4", "labels=[a, b]"]` -> nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has_key(tree: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in loc:
        if isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict) or str(part) not in {str(k) for k in node}:
            return False
        node = next(v for k, v in node.items() if str(k) == str(part))
    return True


_UNION_TAGS = frozenset({"float", "int", "str", "bool", "none"})


def load_config(
    name: str, root: Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Resolve dataset `name`: params.yaml <- datasets/NAME.yaml <- `--set` overrides."""
    root = (root or find_root()).resolve()
    params_path = root / PARAMS_FILE
    dataset_path = root / DATASETS_DIR / f"{name}.yaml"
    if not dataset_path.is_file():
        known = ", ".join(dataset_names(root)) or "none"
        raise ConfigError(f"{dataset_path}: no such dataset {name!r} (known: {known})")
    params = read_yaml(params_path)
    dataset = read_yaml(dataset_path)
    cli = parse_overrides(overrides)
    merged = deep_merge(deep_merge(params, dataset), cli)
    merged.setdefault("name", name)
    if merged["name"] != name:
        raise ConfigError(f"{dataset_path}: name {merged['name']!r} must match the file name")
    try:
        cfg = Config.model_validate({**merged, "root": root})
    except ValidationError as exc:
        err = exc.errors()[0]
        # A union type's member names ("float", "literal['auto']") are not keys.
        loc = tuple(str(p).rstrip("_") for p in err["loc"] if str(p) not in _UNION_TAGS
                    and not str(p).startswith("literal["))
        msg = err["msg"].removeprefix("Value error, ")
        key, sep, rest = msg.partition(": ")
        if sep and loc and key.startswith(loc[0] + "."):  # training options name their key
            index = next((p for p in loc if p.isdigit()), "")  # train.stages[].epochs
            loc, msg = tuple(key.replace("[]", f".{index}" if index else "").split(".")), rest
        origin = (
            "--set" if loc and _has_key(cli, loc) else
            str(dataset_path) if _has_key(dataset, loc) or not _has_key(params, loc) else
            str(params_path)
        )
        where = ".".join(loc) or "(top level)"
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key"
        raise ConfigError(f"{origin}: {where}: {msg}") from None
    return cfg
