"""Text encoding for the tokenize step: fast tokenizers, truncation, the on-disk split format.

Each split is written in the `datasets.save_to_disk` layout (`input_ids` int32 lists,
`labels`, `length` int32) that the training core reads with pyarrow alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from tunesmith.console import progress_bars
from tunesmith.errors import EnvironmentProblem


def load_tokenizer(base: str) -> Any:
    """The base model's fast tokenizer, offline; a missing model is one clear line."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base, use_fast=True)
    except OSError as exc:
        raise EnvironmentProblem(f"model.base {base!r}: can't load its tokenizer ({exc})") from None


def load_rust_tokenizer(base: str) -> Any:
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


def encode_texts(texts: list[str], tokenizer: Any, max_len: int,
                 batch_size: int) -> tuple[list[list[int]], np.ndarray]:
    """Token ids per text (truncated to `max_len`, keeping the closing [SEP]) and the
    untruncated lengths. Encoded without truncation so the report can say how many texts
    max_length cuts; only the (few) long rows are cut afterwards."""
    if hasattr(tokenizer, "encode_batch_fast"):
        ids, closing_id = _encode_rust(texts, tokenizer, batch_size)
    else:
        ids, closing_id = _encode_hf(texts, tokenizer, batch_size)
    full = np.fromiter((len(e) for e in ids), dtype=np.int64, count=len(ids))
    for row in np.flatnonzero(full > max_len):
        ids[row] = truncate(ids[row], max_len, closing_id)
    return ids, full


def _encode_rust(texts: list[str], tokenizer: Any, batch_size: int) -> tuple[list, int | None]:
    ids: list[list[int]] = []
    # Large batches keep the Rust side parallel; the bar only shows on big datasets.
    step = max(batch_size, 50_000)
    for start in tqdm(range(0, len(texts), step), desc="tokenize", unit="batch",
                      disable=len(texts) < 200_000 or not progress_bars(), leave=False):
        ids.extend(e.ids for e in tokenizer.encode_batch_fast(texts[start:start + step]))
    empty = tokenizer.encode("")
    # The special token the post-processor closes every text with ([SEP]), if any.
    closing_id = empty.ids[-1] if empty.ids and empty.special_tokens_mask[-1] else None
    return ids, closing_id


def _encode_hf(texts: list[str], tokenizer: Any, batch_size: int) -> tuple[list, int | None]:
    ids: list[list[int]] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="tokenize", unit="batch",
                      disable=len(texts) < 50_000 or not progress_bars(), leave=False):
        ids.extend(tokenizer(texts[start:start + batch_size], truncation=False, verbose=False,
                             return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"])
    return ids, tokenizer.sep_token_id


def truncate(ids: list[int], max_len: int, last_id: int | None) -> list[int]:
    if len(ids) <= max_len:
        return ids
    # Keep the closing special token ([SEP]) the model saw in pretraining.
    return ids[: max_len - 1] + [last_id] if last_id is not None else ids[:max_len]


def save_split(columns: dict, path: Path, fingerprint: str) -> None:
    """Write one split in the `datasets.save_to_disk` layout (readable with pyarrow alone)."""
    import datasets

    datasets.disable_progress_bars()  # one progress bar per split of 40 rows is noise
    nested = len(columns["labels"]) and isinstance(columns["labels"][0], list)
    types = {"input_ids": pa.list_(pa.int32()), "length": pa.int32(),
             "labels": pa.list_(pa.int64()) if nested else pa.int64()}
    table = pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})
    # An explicit fingerprint spares `datasets` from hashing (and printing) our code.
    datasets.Dataset(table, fingerprint=fingerprint).save_to_disk(str(path))


def percentiles(lengths: np.ndarray) -> dict[str, int]:
    if len(lengths) == 0:
        return {"p50": 0, "p95": 0, "max": 0}
    return {"p50": int(np.percentile(lengths, 50)), "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max())}


def token_report(rows: dict[str, int], lengths: dict[str, np.ndarray], truncated: int,
                 max_length: int) -> dict:
    """rows and token-length percentiles per split, and the share of rows truncated."""
    total = sum(rows.values())
    report = {"rows": rows, "max_length": max_length,
              "tokens": {s: percentiles(v) for s, v in lengths.items()},
              "truncated": truncated, "truncated_share": round(truncated / max(total, 1), 4)}
    report["tokens"]["all"] = percentiles(np.concatenate(list(lengths.values())))
    return report
