"""Text classification: a text column and a label column; a sequence classifier.

The protocol (tunesmith.objectives.TaskType), in step order. The baseline is TF-IDF + logistic
regression fit on the train split (tunesmith/objectives/text_classification/baseline.py).
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

NAME = "text-classification"
ROLES = ("text", "label")
ROLE_SETS = (ROLES,)
LABELLED = True
BASELINE = "TF-IDF+LR"
BASELINE_MIN_GAIN = 0.0  # a tie with the classical baseline passes
PREDICTS = ("label", "score")
PEFT_TASK = "SEQ_CLS"  # peft TaskType of the LoRA wrapper
# What evaluate reports (tunesmith.metrics.classification_metrics, latency, size).
MEASURES = frozenset({"accuracy", "f1_macro", "precision_macro", "recall_macro", "mcc",
                      "roc_auc", "pr_auc", "ece", "latency_ms_batch1", "latency_ms_batched",
                      "model_size_mb"})
PRIMARY_METRIC = "f1_macro"  # register.primary_metric when unset
DEFAULT_BASE = "all-MiniLM-L6-v2"  # model.base when unset (tunesmith.models)
READS: dict[str, tuple[str, ...]] = {}
INPUTS: dict[str, tuple[str, ...]] = {}
# The common train.lr table (tunesmith/training/options.py) was measured on this task.
LR_DEFAULTS: dict[str, dict[str, float]] = {}
# train.batch_tokens when unset: off (tokenize.max_length, 128, already bounds a batch of 32
# rows at 4,096 tokens).
BATCH_TOKENS: dict[str, int] = {}


def check_base(config: dict) -> str | None:
    """None if `config` (a base's config.json) can be a text classifier's body."""
    if "num_channels" in config or config.get("model_type") in VISION:
        return (f"is an image model ({config.get('model_type')}), not a text model; use a text "
                "encoder such as all-MiniLM-L6-v2")
    return None


# ---------------------------------------------------------------------- ingest, clean


def read_source(cfg: Config, staging: Path) -> tuple[pd.DataFrame, dict]:
    from tunesmith.sources import ingest_table

    columns = [cfg.columns.text, cfg.columns.label]
    frame, manifest = ingest_table(cfg, staging, columns)
    return frame.rename(columns=dict(zip(columns, ROLES, strict=True))), manifest


def clean(cfg: Config, staging: Path) -> dict:
    """Normalise, map labels, drop bad rows by reason, de-duplicate (a normalised text with
    two labels is a conflict), then the splits: the source's own (cleaning.assign_splits),
    else the stratified, leak-free split."""
    import pandas as pd

    from tunesmith import cleaning as C

    frame = pd.read_parquet(cfg.dirs.raw / "rows.parquet")
    rows_in, opts, source = len(frame), cfg.clean, cfg.source.path
    drops: dict[str, dict] = {}
    dropped: list[pd.DataFrame] = []

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        if mask.any():
            drops[reason] = {"count": int(mask.sum()), "examples": C.examples(frame, mask)}
            dropped.append(frame.loc[mask].assign(reason=reason))
            frame = frame.loc[~mask]

    frame["text"] = C.normalise_text(frame["text"], opts)
    frame["label"] = C.map_labels(frame["label"], cfg.labels, cfg.label_map, source, cfg.name)
    drop(frame["label"].isna(), "missing_label")
    drop(frame["text"] == "", "empty_text")
    drop(frame["text"].str.len() < opts.min_chars, "too_short")
    drop(frame["text"].str.len() > opts.max_chars, "too_long")
    conflicts: list[dict] = []
    if opts.dedup:
        drop(C.within_split(frame[["text", "label"]], frame, opts.split).duplicated(),
             "duplicate_exact")
        key = C.dedup_key(frame["text"])
        conflicting = frame.groupby(key)["label"].transform("nunique") > 1
        sample = frame.loc[conflicting].assign(key=key[conflicting]).sort_values("key").head(10)
        conflicts = [{"row": int(i) + 1, "text": r.text[:200], "label": r.label}
                     for i, r in sample.iterrows()]
        if opts.drop_conflicting:
            drop(conflicting, "conflicting_label")
        drop(C.within_split(C.dedup_key(frame["text"]), frame, opts.split).duplicated(),
             "duplicate_normalised")
    C.require_rows(frame, drops, rows_in, source, labelled=True)
    assignment, splits_from = C.assign_splits(frame, frame["label"], opts.split)
    C.publish_dropped(staging, dropped)
    return {"rows_in": rows_in, "rows_out": len(frame), "dropped": drops,
            "splits_from": splits_from,
            "conflicting_labels": conflicts, "text_chars": C.length_stats(frame["text"]),
            "class_balance": C.class_balance(frame, assignment),
            **C.write_splits(staging, frame, assignment, list(ROLES))}


def describe(root: Path, src: Any, columns: dict[str, str | None],
             label_map: dict[str, str]) -> dict:
    """`dataset add`: the columns (--text-col, --label-col) and the labels found in the data."""
    from tunesmith.datasets import infer_labels, require_options

    require_options(NAME, columns, ROLES)
    spec: dict = {"columns": {"text": columns["text"], "label": columns["label"]},
                  "labels": infer_labels(root, src, [columns["text"], columns["label"]],
                                         columns["label"], label_map)}
    return {**spec, "label_map": label_map} if label_map else spec


def report_lines(report: dict) -> list[str]:
    """The clean report for `dataset check`: drops, conflicts, class balance, lengths."""
    from tunesmith.cleaning import report_lines as common

    chars = report["text_chars"]
    lines = common(report, "text")
    if report.get("conflicting_labels"):
        pair = report["conflicting_labels"][:2]
        lines.append("  conflicting labels, e.g. " + "; ".join(
            f"row {c['row']} {c['label']!r}: {c['text'][:40]!r}" for c in pair)
            + " (all in dropped.csv)")
    lines.append(f"  text length (chars): p5 {chars['p5']}, p50 {chars['p50']}, "
                 f"p95 {chars['p95']}, max {chars['max']}")
    return lines


def suite(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    from tunesmith.validation.suites import text_classification

    return text_classification(cfg, frames)


# -------------------------------------------------------------------------- tokenize


def encode(cfg: Config, base: str, staging: Path) -> dict:
    """Token ids per split with the base model's fast tokenizer (the Rust one when it has a
    tokenizer.json: no transformers import, no Python dicts per row)."""
    import numpy as np
    import pandas as pd

    from tunesmith import tokenization as T

    tokenizer = T.load_rust_tokenizer(base) or T.load_tokenizer(base)
    label_ids = {name: i for i, name in enumerate(cfg.labels)}
    max_len = cfg.tokenize.max_length
    rows, lengths, truncated = {}, {}, 0
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(cfg.dirs.clean / f"{split}.parquet")
        ids, full = T.encode_texts(frame["text"].tolist(), tokenizer, max_len,
                                   cfg.tokenize.batch_size)
        length = np.minimum(full, max_len)
        T.save_split({"input_ids": ids,
                      "labels": frame["label"].map(label_ids).to_numpy(dtype=np.int64),
                      "length": length}, staging / split, fingerprint=f"{cfg.name}-{split}")
        rows[split], lengths[split] = len(frame), length
        truncated += int((full > max_len).sum())
    return T.token_report(rows, lengths, truncated, max_len)


# ------------------------------------------------------- train (training core: no pydantic)


def load_model(base: str, labels: list[str], opts: TrainOptions, **kw: Any) -> Any:
    from transformers import AutoModelForSequenceClassification

    from tunesmith.training.methods import load_pretrained

    return load_pretrained(AutoModelForSequenceClassification, base, opts, labels=labels,
                           attention=True, **kw)


def training_data(tokenized: Path, base: str, opts: TrainOptions) -> tuple:
    from tunesmith.training.data import TokenizedDataset, load_text_tokenizer

    return (TokenizedDataset.load(tokenized / "train"), TokenizedDataset.load(tokenized / "val"),
            load_text_tokenizer(base))


def collator(tokenizer: Any, opts: TrainOptions) -> Any:
    from tunesmith.training.data import padding_collator

    return padding_collator(tokenizer)


# ------------------------------------------------------------------------- evaluate


def score_candidate(cfg: Config, out: Path) -> dict:
    """Metrics, latency and size of the trained model on the test split; writes the plot
    files and the most confident mistakes into `out`."""
    from tunesmith import metrics as M
    from tunesmith.objectives.classification import evaluation as C
    from tunesmith.objectives.text_classification.scoring import (
        latency,
        load_classifier,
        predict_proba,
    )

    test = C.read_split(cfg.dirs.clean, "test", "text")
    y_true = C.label_ids(cfg.labels, test, cfg.dirs.clean / "test.parquet")
    texts = test["text"].astype(str).tolist()
    model, tokenizer = load_classifier(cfg.dirs.model / "model", cfg.labels)
    max_len = cfg.tokenize.max_length
    proba = predict_proba(model, tokenizer, texts, cfg.evaluate.batch_size, max_len)
    report: dict[str, Any] = M.classification_metrics(y_true, proba, cfg.labels)
    report.update(latency(model, tokenizer, texts[:cfg.evaluate.latency_examples], max_len))
    report.update(C.model_size(cfg.dirs.model / "model", model))
    C.write_outputs(out, test, y_true, proba, report, cfg.labels, cfg.dirs.model / "curve.csv",
                    cfg.evaluate.n_misclassified, "text")
    return report


def score_baseline(cfg: Config, out: Path, keep: Callable[[dict], bool]) -> dict | None:
    """TF-IDF + logistic regression fit on the train split, scored on the test split; the
    fitted pipeline is saved under `out` when `keep(scores)` (register serves it then:
    `log_baseline`). Not otherwise: MLflow's skops format writes the vocabulary one term
    at a time, ~10 s for the 45,582 terms of 3,954 SST-2 rows (9.7 and 10.9 s measured;
    fitting took 1 s), half of evaluate in bench/pipeline_overhead.py."""
    from tunesmith.errors import DataError
    from tunesmith.objectives.classification import evaluation as C
    from tunesmith.objectives.text_classification.baseline import baseline_proba, fit_baseline

    train = C.read_split(cfg.dirs.clean, "train", "text")
    test = C.read_split(cfg.dirs.clean, "test", "text")
    y_train = C.label_ids(cfg.labels, train, cfg.dirs.clean / "train.parquet")
    if len(set(y_train.tolist())) < 2:
        raise DataError(f"{cfg.dirs.clean / 'train.parquet'}: needs at least two classes")
    model = fit_baseline(train["text"].astype(str).tolist(), y_train, seed=cfg.train.seed)
    proba = baseline_proba(model, test["text"].astype(str).tolist(), len(cfg.labels))
    scores = C.scored(C.label_ids(cfg.labels, test, cfg.dirs.clean / "test.parquet"), proba,
                      cfg.labels)
    if keep(scores):
        C.save_baseline(model, out)
    return scores


def score_majority(cfg: Config) -> dict | None:
    """Always the train split's most frequent class, scored on test (the collapse floor)."""
    from tunesmith.objectives.classification import evaluation as C

    return C.majority_baseline(cfg.dirs.clean, cfg.labels)


def score_champion(cfg: Config) -> dict | None:
    """The registered champion re-scored on this test split (None: not comparable)."""
    from tunesmith.objectives.classification import evaluation as C

    test = C.read_split(cfg.dirs.clean, "test", "text")
    proba = C.champion_proba(cfg, "text", test["text"].astype(str).tolist())
    if proba is None:
        return None
    return C.scored(C.label_ids(cfg.labels, test, cfg.dirs.clean / "test.parquet"), proba,
                    cfg.labels)


# --------------------------------------------------------------------- register, predict


def log_model(cfg: Config, model_dir: Path) -> Any:
    from tunesmith.objectives.text_classification.registering import log_classifier

    return log_classifier(cfg, model_dir, cfg.labels)


def log_baseline(cfg: Config, eval_dir: Path) -> Any | None:
    """The TF-IDF+LR pipeline evaluate fitted and measured, served like the fine-tuned model."""
    from tunesmith.objectives.classification import registering

    return registering.log_baseline(cfg, eval_dir, "text")


def sample_inputs(cfg: Config) -> pd.DataFrame:
    """A few test texts for register's load-and-predict check."""
    import pandas as pd

    path = cfg.dirs.clean / "test.parquet"
    texts = pd.read_parquet(path)["text"].astype(str).head(4).tolist() if path.is_file() else []
    return pd.DataFrame({"text": texts or ["an example text to classify"]})


def predict_inputs(cfg: Config, values: list[str], table: Path | None) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"text": [str(v) for v in values]})


def input_columns(cfg: Config) -> list[str]:
    """Columns of a `predict --input` file that may hold the inputs, in preference order."""
    return [c for c in (cfg.columns.text, "text") if c]


def card_lines(cfg: Config) -> list[str]:
    """The model card's intended use and limitations."""
    return [
        "## Intended use", "",
        f"Classifying short texts like those in `{cfg.source.path}` into "
        f"{', '.join(cfg.labels)}; served with `tunesmith predict --dataset {cfg.name}`.", "",
        "## Limitations", "",
        "- Only as good as its training data: texts unlike the training distribution (other "
        "domains, languages, lengths) are classified with unknown quality.",
        f"- Inputs are truncated to {cfg.tokenize.max_length} tokens.",
        "- Scores are softmax outputs; check `ece` above before reading them as probabilities.",
        "- Metrics come from one test split; small splits give wide error bars.", "",
    ]
