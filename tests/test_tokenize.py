import json
from pathlib import Path

import pyarrow as pa
import pytest

from tasks.clean import clean
from tasks.ingest import ingest
from tasks.tokenize import tokenize
from tunesmith.config import load_config


@pytest.fixture
def cleaned(project: Path):
    cfg = load_config("toy", project)
    ingest(cfg)
    clean(cfg)
    return cfg


def test_tokenize_writes_contract_and_report(cleaned):
    result = tokenize(cleaned)
    assert not result.skipped
    out = cleaned.dirs.tokenized
    meta = json.loads((out / "meta.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["max_length"] == 32
    arrow = next((out / "train").glob("data-*.arrow"))
    table = pa.ipc.open_stream(str(arrow)).read_all()
    assert {"input_ids", "labels", "length"} <= set(table.column_names)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["length"] == len(row["input_ids"]) <= 32
    report = json.loads((out / "token_report.json").read_text())
    assert report["rows"]["train"] == table.num_rows
    assert report["tokens"]["all"]["p50"] > 3


def test_tokenize_reuses_output_when_nothing_changed(cleaned):
    tokenize(cleaned)
    stamp = (cleaned.dirs.tokenized / "meta.json").stat().st_mtime_ns
    assert tokenize(cleaned).skipped
    assert (cleaned.dirs.tokenized / "meta.json").stat().st_mtime_ns == stamp
    shorter = load_config("toy", cleaned.root, ["tokenize.max_length=8"])
    result = tokenize(shorter)
    assert not result.skipped and result.truncated_share > 0.5


def test_rust_path_matches_transformers_tokenizer_and_keeps_sep(cleaned):
    """The step reads tokenizer.json without transformers; its ids must be the same."""
    import pandas as pd
    from transformers import AutoTokenizer

    from tasks.tokenize import _encode, load_rust_tokenizer
    from tunesmith.models import resolve_base

    base = resolve_base(cleaned.model.base, cleaned.root)
    rust = load_rust_tokenizer(base)
    assert rust is not None
    frame = pd.read_parquet(cleaned.dirs.clean / "train.parquet")
    frame.loc[0, "text"] = " ".join(["prize"] * 80)  # longer than max_length 32
    columns, full = _encode(frame, cleaned, rust)
    hf = AutoTokenizer.from_pretrained(base)
    expected = hf(frame["text"].tolist(), truncation=True, max_length=32)["input_ids"]
    assert columns["input_ids"] == expected
    assert full[0] > 32 and columns["length"][0] == 32
    assert columns["input_ids"][0][-1] == hf.sep_token_id
