"""Image classification: image files (a folder per class, or a table of paths) and labels.

The protocol (tunesmith.objectives.TaskType), in step order; the algorithms live next to it
in this package (pipeline side) and in `training.py` (the training core's transforms). The
baseline is logistic regression on thumbnails + colour histograms (`baseline.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

# Protocol functions that are the same for text and images (explicit re-exports).
from tunesmith.objectives.classification import best_metric as best_metric
from tunesmith.objectives.classification import finish_val_metrics as finish_val_metrics
from tunesmith.objectives.classification import measure as measure
from tunesmith.objectives.classification import metric_fns as metric_fns
from tunesmith.objectives.classification import serve as serve
from tunesmith.objectives.classification import training_loss as training_loss
from tunesmith.training.families import VISION

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from tunesmith.config import Config
    from tunesmith.training.options import TrainOptions
    from tunesmith.validation.suites import Batch

NAME = "image-classification"
ROLES = ("image", "label")
ROLE_SETS = (ROLES,)
LABELLED = True
BASELINE = "pixels+histogram LR"
BASELINE_MIN_GAIN = 0.0  # a tie with the classical baseline passes
PREDICTS = ("label", "score")
PEFT_TASK = None  # a plain PeftModel: SEQ_CLS's forward expects input_ids, not pixel_values
MEASURES = frozenset({"accuracy", "f1_macro", "precision_macro", "recall_macro", "mcc",
                      "roc_auc", "pr_auc", "ece", "latency_ms_batch1", "latency_ms_batched",
                      "model_size_mb"})
PRIMARY_METRIC = "f1_macro"  # register.primary_metric when unset
DEFAULT_BASE = "efficientnet-lite0"  # model.base when unset (tunesmith.models)
READS: dict[str, tuple[str, ...]] = {}
# The decodable share is a property of the ingested files (clean drops the broken ones).
INPUTS: dict[str, tuple[str, ...]] = {"validate": ("raw",)}
# train.lr defaults beyond the common table (tunesmith/training/options.py, whose SGD row is
# this task's recipe); `dataset add` writes the RECIPE's rate into the YAML anyway.
LR_DEFAULTS: dict[str, dict[str, float]] = {}
# The hot-dog recipe (docs/image-classification.md), written into the YAML by `dataset add`
# for the default base (EfficientNet-Lite0, ImageNet): SGD with momentum, a small rate for the
# pretrained body and the new Xavier head at 10x, weight decay 1e-3 (none on biases and
# norms), random resized crop + flip. params.yaml's global train defaults are text's.
RECIPE: dict[str, Any] = {
    "method": "full",
    "optimizer": "sgd",
    "momentum": 0.9,
    "lr": 1.0e-3,
    "head_lr_mult": 10.0,
    "weight_decay": 1.0e-3,
    "epochs": 8,
    "batch_size": 16,
    "eval_batch_size": 32,
    "warmup_ratio": 0.0,
    "scheduler": "cosine",
    "augment": True,
    "augment_min_scale": 0.25,
    "early_stopping_patience": 0,
    "metric_for_best": "loss",  # small val splits: accuracy ties too often to pick a checkpoint
    # Keep ImageNet's BatchNorm statistics and affine weights: batches of 16 random crops pull
    # the running statistics towards crop statistics, and `full` then scored 0.70 on the 50
    # held-out hot dog photos against 0.88 with them kept (docs/image-classification.md).
    # Frozen-body methods and LoRA freeze them anyway; `scratch` ignores it.
    "freeze_batchnorm": True,
}
# train.batch_tokens when unset: off (an image is a fixed number of pixels, not tokens).
BATCH_TOKENS: dict[str, int] = {}


def check_base(config: dict) -> str | None:
    """None if `config` (a base's config.json) is an image model."""
    if "num_channels" not in config and config.get("model_type") not in VISION:
        return (f"is not an image model ({config.get('model_type')}); use an image "
                "classifier such as efficientnet-lite0")
    return None


# ---------------------------------------------------------------------- ingest, clean


def read_source(cfg: Config, staging: Path) -> tuple[pd.DataFrame, dict]:
    """Every image copied by digest into staging/images/, with its size, mode, decodability."""
    from tunesmith.objectives.image_classification.sources import ingest_images

    return ingest_images(cfg, staging)


def clean(cfg: Config, staging: Path) -> dict:
    """Drop what can't train (broken, tiny, duplicate files), convert to RGB, split."""
    import pandas as pd

    from tunesmith.cleaning import assign_splits, map_labels, require_rows
    from tunesmith.jsonio import read_json
    from tunesmith.objectives.image_classification.cleaning import drop_bad, write_outputs

    frame = pd.read_parquet(cfg.dirs.raw / "rows.parquet")
    rows_in = len(frame)
    decodable = read_json(cfg.dirs.raw / "manifest.json")["decodable"]
    frame["label"] = map_labels(frame["label"], cfg.labels, cfg.label_map, cfg.source.path,
                                cfg.name)
    frame, drops, dropped = drop_bad(frame, cfg.clean)
    require_rows(frame, drops, rows_in, cfg.source.path, labelled=True)
    assignment, splits_from = assign_splits(frame, frame["label"], cfg.clean.split)
    report = write_outputs(cfg, staging, frame, assignment, drops, dropped, rows_in)
    return {**report, "decodable": decodable, "splits_from": splits_from}


def describe(root: Path, src: Any, columns: dict[str, str | None],
             label_map: dict[str, str]) -> dict:
    """`dataset add`: a folder per class (labels = the class folders), or a table with
    --image-col and --label-col; the `train` section is the transfer-learning RECIPE."""
    from tunesmith.datasets import check_labels, infer_labels, local_source, require_options
    from tunesmith.objectives.image_classification.sources import from_folder

    local = local_source(root, src)
    if local.is_dir() and src.format in (None, "folder"):
        found = sorted({label_map.get(v, v) for v in from_folder(local)["label"]})
        spec: dict = {"columns": {"image": "image", "label": "label"},
                      "labels": check_labels(found, local, "the class folders")}
    else:
        require_options(NAME, columns, ROLES)
        spec = {"columns": {"image": columns["image"], "label": columns["label"]},
                "labels": infer_labels(root, src, [columns["image"], columns["label"]],
                                       columns["label"], label_map)}
    if label_map:
        spec["label_map"] = label_map
    return {**spec, "train": dict(RECIPE)}


def report_lines(report: dict) -> list[str]:
    """Kept share, converted files, image sizes, class balance, splits."""
    from tunesmith.cleaning import report_lines as common

    lines = common(report, "path")
    n = max(report["rows_in"], 1)
    lines.append(f"  decodable: {report['decodable']} of {report['rows_in']} files "
                 f"({report['decodable'] / n:.0%}); kept {report['rows_out'] / n:.0%}; "
                 f"{report.get('converted_to_rgb', 0)} converted to RGB")
    w, h = report["image_width"], report["image_height"]
    lines.append(f"  image size (px): width {w['min']}-{w['max']} (median {w['p50']}), "
                 f"height {h['min']}-{h['max']} (median {h['p50']})")
    return lines


def suite(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    from tunesmith.objectives.image_classification.suites import image_classification

    return image_classification(cfg, frames)


# -------------------------------------------------------------------------- tokenize


def encode(cfg: Config, base: str, staging: Path) -> dict:
    """The image processor's resize + centre crop, stored as uint8 (same step name)."""
    from tunesmith.objectives.image_classification.preprocess import preprocess

    return preprocess(cfg, base, staging)


# ------------------------------------------------------- train (training core: no pydantic)


def load_model(base: str, labels: list[str], opts: TrainOptions, **kw: Any) -> Any:
    from tunesmith.objectives.image_classification.training import load_image_model

    return load_image_model(base, labels, opts, **kw)


def training_data(tokenized: Path, base: str, opts: TrainOptions) -> tuple:
    from tunesmith.objectives.image_classification.training import image_training_data

    return image_training_data(tokenized, base, opts)


def collator(processor: Any, opts: TrainOptions) -> Any:
    from tunesmith.objectives.image_classification.training import image_collator

    return image_collator


# ------------------------------------------------------------------------- evaluate


def _test(cfg: Config) -> tuple[pd.DataFrame, Any, list[Path]]:
    from tunesmith.objectives.classification import evaluation as C

    test = C.read_split(cfg.dirs.clean, "test", "image")
    y_true = C.label_ids(cfg.labels, test, cfg.dirs.clean / "test.parquet")
    return test, y_true, [cfg.dirs.clean / p for p in test["image"]]


def score_candidate(cfg: Config, out: Path) -> dict:
    """The same metrics and files as text, scored on the image files (decode + the saved
    image processor, as `predict` does), plus a grid of the misclassified images."""
    from tunesmith import metrics as M
    from tunesmith.objectives.classification import evaluation as C
    from tunesmith.objectives.image_classification.grid import misclassified_grid
    from tunesmith.objectives.image_classification.scoring import (
        latency,
        load_image_classifier,
        predict_proba,
    )

    test, y_true, paths = _test(cfg)
    model, processor = load_image_classifier(cfg.dirs.model / "model", cfg.labels)
    proba = predict_proba(model, processor, paths, cfg.evaluate.batch_size)
    report: dict[str, Any] = M.classification_metrics(y_true, proba, cfg.labels)
    report.update(latency(model, processor, paths, cfg.evaluate.latency_examples))
    report.update(C.model_size(cfg.dirs.model / "model", model))
    worst = C.write_outputs(out, test, y_true, proba, report, cfg.labels,
                            cfg.dirs.model / "curve.csv", cfg.evaluate.n_misclassified, "image")
    misclassified_grid(worst, cfg.dirs.clean, out / "misclassified_grid.png")
    return report


def score_baseline(cfg: Config, out: Path, keep: Callable[[dict], bool]) -> dict | None:
    """Logistic regression on pixels + colour histograms; saved under `out` when `keep`."""
    from tunesmith.objectives.classification import evaluation as C
    from tunesmith.objectives.image_classification import baseline as B

    train = C.read_split(cfg.dirs.clean, "train", "image")
    _, y_true, paths = _test(cfg)
    fitted = B.fit_baseline([cfg.dirs.clean / p for p in train["image"]],
                            C.label_ids(cfg.labels, train, cfg.dirs.clean / "train.parquet"),
                            seed=cfg.train.seed)
    scores = C.scored(y_true, B.baseline_proba(fitted, paths, len(cfg.labels)), cfg.labels)
    if keep(scores):
        C.save_baseline(fitted, out)  # register serves it (log_baseline)
    return scores


def score_majority(cfg: Config) -> dict | None:
    from tunesmith.objectives.classification import evaluation as C

    return C.majority_baseline(cfg.dirs.clean, cfg.labels)


def score_champion(cfg: Config) -> dict | None:
    from tunesmith.objectives.classification import evaluation as C

    _, y_true, paths = _test(cfg)
    proba = C.champion_proba(cfg, "image", [str(p) for p in paths])
    return None if proba is None else C.scored(y_true, proba, cfg.labels)


# --------------------------------------------------------------------- register, predict


def log_model(cfg: Config, model_dir: Path) -> Any:
    from tunesmith.objectives.image_classification.registering import log_image_classifier

    return log_image_classifier(cfg, model_dir, cfg.labels)


def log_baseline(cfg: Config, eval_dir: Path) -> Any | None:
    """The pixels+histogram LR evaluate fitted, served on image paths like the CNN."""
    from tunesmith.objectives.classification import registering

    return registering.log_baseline(cfg, eval_dir, "image")


def sample_inputs(cfg: Config) -> pd.DataFrame:
    """A few test images (absolute paths) for register's load-and-predict check."""
    import pandas as pd

    images = pd.read_parquet(cfg.dirs.clean / "test.parquet")["image"].head(4)
    return pd.DataFrame({"image": [str(cfg.dirs.clean / p) for p in images]})


def predict_inputs(cfg: Config, values: list[str], table: Path | None) -> pd.DataFrame:
    """Absolute paths of existing image files (a table's relative paths are relative to
    it); a folder given as an argument stands for every image file under it (sorted, any
    depth: `hotdog/val` with its class folders works); a missing file is one line naming
    it (and the row of the table)."""
    import pandas as pd

    from tunesmith.errors import DataError
    from tunesmith.objectives.image_classification.sources import IMAGE_SUFFIXES

    out = []
    for i, value in enumerate(values):
        path = Path(value)
        if not path.is_absolute() and table is not None:
            path = table.parent / path
        if table is None and path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and p.is_file() and not p.name.startswith("."))
            if not found:
                raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                                "in this folder")
            out.extend(str(p.resolve()) for p in found)
            continue
        if not path.is_file():
            where = f"{table}: row {i + 1}: " if table is not None else ""
            raise DataError(f"{where}image file not found: {path}")
        out.append(str(path.resolve()))
    return pd.DataFrame({"image": out})


def input_columns(cfg: Config) -> list[str]:
    return [c for c in (cfg.columns.image, "image", "path") if c]


def card_lines(cfg: Config) -> list[str]:
    return [
        "## Intended use", "",
        f"Classifying images like those in `{cfg.source.path}` into {', '.join(cfg.labels)}; "
        f"served with `tunesmith predict --dataset {cfg.name}`.", "",
        "## Limitations", "",
        "- Only as good as its training data: images unlike the training distribution (other "
        "cameras, scenes, resolutions) are classified with unknown quality.",
        "- Images are resized and centre-cropped by the model's image processor.",
        "- Scores are softmax outputs; check `ece` above before reading them as probabilities.",
        "- Metrics come from one test split; small splits give wide error bars.", "",
    ]
