"""Causal-LM instruction tuning: a prompt and a response per row; loss on the response only.

The protocol (tunesmith.tasktypes.TaskType), in step order. Rows are rendered with
`train.prompt_template`, which tokenize, evaluate and the served model all read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tunesmith.config import Config
    from tunesmith.training.options import TrainOptions
    from tunesmith.validation.suites import Batch

NAME = "causal-lm"
ROLES = ("prompt", "response")
LABELLED = False
BASELINE = "untuned base model"
PREDICTS = ("response",)
PEFT_TASK = "CAUSAL_LM"
MEASURES = frozenset({"eval_loss", "perplexity", "n_tokens", "model_size_mb"})
# The template decides the tokens (tokenize), the scored text (evaluate) and what the
# served model renders (register logs it with the model).
DEFAULT_BASE = "SmolLM2-135M-Instruct"  # model.base when unset (tunesmith.models)
READS: dict[str, tuple[str, ...]] = {
    "tokenize": ("train.prompt_template",),
    "evaluate": ("train.prompt_template",),
    "register": ("train.prompt_template",),
}
INPUTS: dict[str, tuple[str, ...]] = {}
N_SAMPLES = 5  # generated examples shown in the eval report


# ---------------------------------------------------------------------- ingest, clean


def read_source(cfg: Config, staging: Path) -> tuple[pd.DataFrame, dict]:
    from tunesmith.sources import ingest_table

    frame, manifest = ingest_table(cfg, staging, [cfg.columns.prompt, cfg.columns.response])
    return frame.set_axis(list(ROLES), axis=1), manifest


def clean(cfg: Config, staging: Path) -> dict:
    """Normalise both sides, drop empty rows and duplicates; a random (unstratified) split."""
    import pandas as pd

    from tunesmith import cleaning as C

    frame = pd.read_parquet(cfg.dirs.raw / "rows.parquet")
    rows_in, opts = len(frame), cfg.clean
    drops: dict[str, dict] = {}
    dropped: list[pd.DataFrame] = []

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        if mask.any():
            drops[reason] = {"count": int(mask.sum()),
                             "examples": C.examples(frame, mask, col="prompt")}
            dropped.append(frame.loc[mask].assign(reason=reason))
            frame = frame.loc[~mask]

    frame["prompt"] = C.normalise_text(frame["prompt"], opts)
    frame["response"] = C.normalise_text(frame["response"], opts)
    drop((frame["prompt"] == "") | (frame["response"] == ""), "empty_text")
    if opts.dedup:
        drop(frame.duplicated(["prompt", "response"], keep="first"), "duplicate_exact")
        key = C.dedup_key(frame["prompt"] + " \x00 " + frame["response"])
        drop(key.duplicated(keep="first"), "duplicate_normalised")
    C.require_rows(frame, drops, rows_in, cfg.source.path, labelled=False)
    assignment = C.stratified_split(pd.Series("all", index=frame.index), opts.split)
    C.publish_dropped(staging, dropped)
    return {"rows_in": rows_in, "rows_out": len(frame), "dropped": drops,
            "text_chars": C.length_stats(frame["prompt"]),
            "response_chars": C.length_stats(frame["response"]),
            **C.write_splits(staging, frame, assignment, list(ROLES))}


def describe(root: Path, src: Any, columns: dict[str, str | None],
             label_map: dict[str, str]) -> dict:
    """`dataset add`: the prompt and response columns (--prompt-col, --response-col)."""
    from tunesmith.datasets import local_source, require_options
    from tunesmith.sources import read_table, require_columns

    require_options(NAME, columns, ROLES)
    local = local_source(root, src)
    require_columns(read_table(local, src), [columns["prompt"], columns["response"]], local)
    return {"columns": {"prompt": columns["prompt"], "response": columns["response"]}}


def report_lines(report: dict) -> list[str]:
    from tunesmith.cleaning import report_lines as common

    lines = common(report, "prompt")
    for what, key in (("prompt", "text_chars"), ("response", "response_chars")):
        if chars := report.get(key):
            lines.append(f"  {what} length (chars): p5 {chars['p5']}, p50 {chars['p50']}, "
                         f"p95 {chars['p95']}, max {chars['max']}")
    return lines


def suite(cfg: Config, frames: dict[str, pd.DataFrame]) -> list[Batch]:
    from tunesmith.validation.suites import causal_lm

    return causal_lm(cfg, frames)


# -------------------------------------------------------------------------- tokenize


def encode(cfg: Config, base: str, staging: Path) -> dict:
    """Template + prompt + response + eos per row, labels -100 on the prompt tokens."""
    import numpy as np
    import pandas as pd

    from tunesmith import tokenization as T
    from tunesmith.training.causal_lm import tokenize_causal

    tokenizer = T.load_tokenizer(base)
    max_len = cfg.tokenize.max_length
    rows, lengths, truncated = {}, {}, 0
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(cfg.dirs.clean / f"{split}.parquet")
        cols = tokenize_causal(frame["prompt"].tolist(), frame["response"].tolist(), tokenizer,
                               cfg.train.prompt_template, max_len)
        full = np.asarray(cols.pop("full_length"), dtype=np.int64)
        T.save_split(cols, staging / split, fingerprint=f"{cfg.name}-{split}")
        rows[split], lengths[split] = len(frame), np.asarray(cols["length"], dtype=np.int64)
        truncated += int((full > max_len).sum())
    return T.token_report(rows, lengths, truncated, max_len)


# ------------------------------------------------------- train (training core: no pydantic)


def load_model(base: str, labels: list[str] | None, opts: TrainOptions, **kw: Any) -> Any:
    from transformers import AutoModelForCausalLM

    from tunesmith.training.methods import load_pretrained

    return load_pretrained(AutoModelForCausalLM, base, opts, labels=None, attention=True, **kw)


def training_data(tokenized: Path, base: str, opts: TrainOptions) -> tuple:
    from tunesmith.training.data import TokenizedDataset, load_text_tokenizer

    return (TokenizedDataset.load(tokenized / "train"), TokenizedDataset.load(tokenized / "val"),
            load_text_tokenizer(base))


def collator(tokenizer: Any, opts: TrainOptions) -> Any:
    from tunesmith.training.causal_lm import causal_collator

    return causal_collator(tokenizer, opts.packing)


def metric_fns() -> tuple[Any, Any]:
    return None, None  # validation reports the loss only (prediction_loss_only)


def best_metric(opts: TrainOptions) -> tuple[str, bool]:
    """The validation loss (or perplexity) whatever `metric_for_best` says: no accuracy here."""
    metric = opts.metric_for_best if opts.metric_for_best in ("loss", "perplexity") else "loss"
    return metric, False


def finish_val_metrics(metrics: dict[str, float]) -> dict[str, float]:
    from tunesmith.training.causal_lm import perplexity

    return {**metrics, "perplexity": perplexity(metrics["loss"])}


# ------------------------------------------------------------------------- evaluate


def _test_rows(cfg: Config) -> pd.DataFrame:
    import pandas as pd

    from tunesmith.errors import DataError

    path = cfg.dirs.clean / "test.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the clean step first")
    test = pd.read_parquet(path)
    if missing := {"prompt", "response"} - set(test.columns):
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return test


def score_candidate(cfg: Config, out: Path) -> dict:
    """Response-token loss and perplexity on test, and a few greedy generations next to the
    reference responses (samples.jsonl / samples.md in `out`)."""
    from tunesmith import plots
    from tunesmith.classification import model_size
    from tunesmith.lm_eval import generate_samples, lm_loss, load_lm, samples_markdown

    test = _test_rows(cfg)
    model, tokenizer = load_lm(cfg.dirs.model / "model")
    template, max_len = cfg.train.prompt_template, cfg.tokenize.max_length
    report: dict[str, Any] = {
        "n": len(test),
        **lm_loss(model, tokenizer, test, template, max_len, cfg.evaluate.batch_size)}
    report.update(model_size(cfg.dirs.model / "model", model))
    samples = generate_samples(model, tokenizer, test.head(N_SAMPLES), template, max_len)
    samples.to_json(out / "samples.jsonl", orient="records", lines=True, force_ascii=False)
    (out / "samples.md").write_text(samples_markdown(samples), encoding="utf-8")
    if (curve := plots.read_curve(cfg.dirs.model / "curve.csv")) is not None:
        plots.training_curves_png(curve, out / "training_curves.png")
    return report


def score_baseline(cfg: Config) -> dict | None:
    return None  # the untuned base model as a baseline: not measured yet


def score_champion(cfg: Config) -> dict | None:
    """The registered champion's loss on this test split (None: not comparable)."""
    import sys

    from tunesmith.lm_eval import lm_loss, load_lm
    from tunesmith.registry import store

    try:
        model, tokenizer = load_lm(store.model_dir_for(cfg, store.CHAMPION))
        return lm_loss(model, tokenizer, _test_rows(cfg), cfg.train.prompt_template,
                       cfg.tokenize.max_length, cfg.evaluate.batch_size)
    except Exception as exc:  # noqa: BLE001 - any failure means "not comparable"
        print(f"evaluate: the champion could not be re-scored: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------- register, predict


def log_model(cfg: Config, model_dir: Path) -> Any:
    from tunesmith.registry import store

    return store.log_generator(cfg, model_dir)


def sample_inputs(cfg: Config) -> pd.DataFrame:
    import pandas as pd

    path = cfg.dirs.clean / "test.parquet"
    prompts = pd.read_parquet(path)["prompt"].astype(str).head(2).tolist() \
        if path.is_file() else []
    return pd.DataFrame({"prompt": prompts or ["Say hello."]})


def predict_inputs(cfg: Config, values: list[str], table: Path | None) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"prompt": [str(v) for v in values]})


def input_columns(cfg: Config) -> list[str]:
    return [c for c in (cfg.columns.prompt, "prompt", "text") if c]


def card_lines(cfg: Config) -> list[str]:
    return [
        "## Intended use", "",
        f"Answering instructions like those in `{cfg.source.path}`; served with "
        f"`tunesmith predict --dataset {cfg.name}`.", "",
        "## Limitations", "",
        "- Only as good as its training data: instructions unlike it get answers of unknown "
        "quality; generations can be wrong with full confidence.",
        f"- Prompt and response together are truncated to {cfg.tokenize.max_length} tokens.",
        "- Metrics come from one test split; small splits give wide error bars.", "",
    ]
