"""tokenize: the base model's fast tokenizer over each split, saved as HF datasets on disk.

For image-classification the same step preprocesses instead: the model's image processor
resizes and centre-crops every image (tunesmith/images/preprocess.py).

Skipped when data digests, tokenizer files and max length match the previous run's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from tasks.clean import REPORT, SPLITS
from tunesmith.config import Config
from tunesmith.errors import EnvironmentProblem
from tunesmith.jsonio import read_json, write_json
from tunesmith.models import resolve_base

META = "meta.json"
TOKEN_REPORT = "token_report.json"


@dataclass
class TokenizeResult:
    skipped: bool
    rows: dict[str, int]
    truncated_share: float
    tokenized_dir: Path


def load_tokenizer(base: str):
    """The base model's fast tokenizer, offline; a missing model is one clear line."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base, use_fast=True)
    except OSError as exc:
        raise EnvironmentProblem(f"model.base {base!r}: can't load its tokenizer ({exc})") from None


def load_rust_tokenizer(base: str):
    """The model's `tokenizer.json` as a bare Rust tokenizer, or None if it has none.

    This is what `AutoTokenizer` wraps for classification models, without importing
    transformers/torch (seconds per DVC stage process) or converting every encoding to
    Python dicts (half the step's time at 1M rows; bench/data_path.py).
    """
    path = Path(base) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    # tokenizer.json files often carry the export's padding/truncation; we want raw ids.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def cache_key(cfg: Config, base: str) -> str:
    """What the output depends on: split digests, tokenizer files, max length, task, labels."""
    digests = read_json(cfg.dirs.clean / REPORT)["digests"]
    h = hashlib.sha256(json.dumps(
        [digests, cfg.tokenize.max_length, cfg.task, cfg.labels,
         cfg.train.prompt_template if cfg.task == "causal-lm" else ""],
        sort_keys=True).encode())
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "merges.txt"):
        if (Path(base) / name).is_file():
            h.update((Path(base) / name).read_bytes())
    if not Path(base).is_dir():
        h.update(base.encode())  # hub id: the name is all we know without downloading
    return h.hexdigest()


def tokenize(cfg: Config) -> TokenizeResult:
    """Tokenize the clean splits into `cfg.dirs.tokenized/{train,val,test}` + meta + report."""
    out = cfg.dirs.tokenized
    base = resolve_base(cfg.model.base, cfg.root)
    if cfg.task == "image-classification":
        return _preprocess_images(cfg, base, out)
    key = cache_key(cfg, base)
    meta_path = out / META
    if meta_path.is_file() and read_json(meta_path).get("cache_key") == key:
        report = read_json(out / TOKEN_REPORT)
        return TokenizeResult(True, report["rows"], report["truncated_share"], out)

    tokenizer = None if cfg.task == "causal-lm" else load_rust_tokenizer(base)
    tokenizer = tokenizer or load_tokenizer(base)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report: dict = {"rows": {}, "tokens": {}, "max_length": cfg.tokenize.max_length}
    all_lengths, all_truncated = [], 0
    for split in SPLITS:
        frame = pd.read_parquet(cfg.dirs.clean / f"{split}.parquet")
        columns, full_lengths = _encode(frame, cfg, tokenizer)
        _save_split(columns, staging / split, fingerprint=f"{key[:16]}-{split}")
        lengths = np.asarray(columns["length"], dtype=np.int64)
        truncated = int((full_lengths > cfg.tokenize.max_length).sum())
        report["rows"][split] = len(frame)
        report["tokens"][split] = _percentiles(lengths)
        all_lengths.append(lengths)
        all_truncated += truncated
    total = sum(report["rows"].values())
    report["truncated_share"] = round(all_truncated / max(total, 1), 4)
    report["tokens"]["all"] = _percentiles(np.concatenate(all_lengths))
    write_json(staging / TOKEN_REPORT, report)
    write_json(staging / META, {
        "task": cfg.task, "labels": cfg.labels, "base_model": base,
        "max_length": cfg.tokenize.max_length, "cache_key": key,
        "data_digest": read_json(cfg.dirs.clean / REPORT)["digests"],
    })
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return TokenizeResult(False, report["rows"], report["truncated_share"], out)


def _preprocess_images(cfg: Config, base: str, out: Path) -> TokenizeResult:
    """Images: the image processor's resize + centre crop, stored as uint8 (same step name)."""
    from tunesmith.images.preprocess import preprocess

    rows = preprocess(cfg, base, out)
    if rows is None:
        return TokenizeResult(True, read_json(out / TOKEN_REPORT)["rows"], 0.0, out)
    return TokenizeResult(False, rows, 0.0, out)


def _encode(frame: pd.DataFrame, cfg: Config, tokenizer) -> tuple[dict, np.ndarray]:
    """Token ids per row (truncated to max_length) and the untruncated lengths."""
    max_len = cfg.tokenize.max_length
    if cfg.task == "causal-lm":
        from tunesmith.training.causal_lm import tokenize_causal

        cols = tokenize_causal(frame["prompt"].tolist(), frame["response"].tolist(), tokenizer,
                               cfg.train.prompt_template, max_len)
        return cols, np.asarray(cols.pop("full_length", cols["length"]))
    label_ids = {name: i for i, name in enumerate(cfg.labels)}
    labels = frame["label"].map(label_ids).to_numpy(dtype=np.int64)
    texts = frame["text"].tolist()
    if hasattr(tokenizer, "encode_batch_fast"):
        ids, closing_id = _encode_rust(texts, tokenizer, cfg.tokenize.batch_size)
    else:
        ids, closing_id = _encode_hf(texts, tokenizer, cfg.tokenize.batch_size)
    full = np.fromiter((len(e) for e in ids), dtype=np.int64, count=len(ids))
    # No truncation while encoding so the report can say how many texts max_length cuts;
    # only the (few) long rows are cut here.
    for row in np.flatnonzero(full > max_len):
        ids[row] = _truncate(ids[row], max_len, closing_id)
    return {"input_ids": ids, "labels": labels, "length": np.minimum(full, max_len)}, full


def _encode_rust(texts: list[str], tokenizer, batch_size: int) -> tuple[list, int | None]:
    ids: list[list[int]] = []
    # Large batches keep the Rust side parallel; the bar only shows on big datasets.
    step = max(batch_size, 50_000)
    for start in tqdm(range(0, len(texts), step), desc="tokenize", unit="batch",
                      disable=len(texts) < 200_000, leave=False):
        ids.extend(e.ids for e in tokenizer.encode_batch_fast(texts[start:start + step]))
    empty = tokenizer.encode("")
    # The special token the post-processor closes every text with ([SEP]), if any.
    closing_id = empty.ids[-1] if empty.ids and empty.special_tokens_mask[-1] else None
    return ids, closing_id


def _encode_hf(texts: list[str], tokenizer, batch_size: int) -> tuple[list, int | None]:
    ids: list[list[int]] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="tokenize", unit="batch",
                      disable=len(texts) < 50_000, leave=False):
        ids.extend(tokenizer(texts[start:start + batch_size], truncation=False, verbose=False,
                             return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"])
    return ids, tokenizer.sep_token_id


def _truncate(ids: list[int], max_len: int, last_id: int | None) -> list[int]:
    if len(ids) <= max_len:
        return ids
    # Keep the closing special token ([SEP]) the model saw in pretraining.
    return ids[: max_len - 1] + [last_id] if last_id is not None else ids[:max_len]


def _save_split(columns: dict, path: Path, fingerprint: str) -> None:
    """Write one split in the `datasets.save_to_disk` layout (readable with pyarrow alone)."""
    import datasets

    datasets.disable_progress_bars()  # one progress bar per split of 40 rows is noise

    types = {"input_ids": pa.list_(pa.int32()), "length": pa.int32(),
             "labels": pa.list_(pa.int64()) if len(columns["labels"]) and
             isinstance(columns["labels"][0], list) else pa.int64()}
    table = pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})
    # An explicit fingerprint spares `datasets` from hashing (and printing) our code.
    datasets.Dataset(table, fingerprint=fingerprint).save_to_disk(str(path))


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    if len(lengths) == 0:
        return {"p50": 0, "p95": 0, "max": 0}
    return {"p50": int(np.percentile(lengths, 50)), "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max())}
