import json
from pathlib import Path

import pyarrow as pa
import pytest

from tunesmith.config import load_config
from tunesmith.tasks.clean import clean
from tunesmith.tasks.ingest import ingest
from tunesmith.tasks.tokenize import tokenize


@pytest.fixture
def cleaned(project: Path):
    cfg = load_config("toy", project)
    ingest(cfg)
    clean(cfg)
    return cfg


def test_tokenize_writes_contract_and_report(cleaned):
    tokenize(cleaned)
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


def test_tokenize_counts_what_max_length_cuts(cleaned):
    assert tokenize(cleaned).truncated_share == 0.0
    shorter = load_config("toy", cleaned.root, ["tokenize.max_length=8"])
    result = tokenize(shorter)
    report = json.loads((cleaned.dirs.tokenized / "token_report.json").read_text())
    assert result.truncated_share > 0.5 and report["truncated"] > 0.5 * sum(result.rows.values())
    assert report["tokens"]["all"]["max"] == 8


def test_rust_path_matches_transformers_tokenizer_and_keeps_sep(cleaned):
    """The step reads tokenizer.json without transformers; its ids must be the same."""
    import pandas as pd
    from transformers import AutoTokenizer

    from tunesmith.models import resolve_base
    from tunesmith.tokenization import encode_texts, load_rust_tokenizer

    base = resolve_base(cleaned.model.base, cleaned.root)
    rust = load_rust_tokenizer(base)
    assert rust is not None
    frame = pd.read_parquet(cleaned.dirs.clean / "train.parquet")
    frame.loc[0, "text"] = " ".join(["prize"] * 80)  # longer than max_length 32
    ids, full = encode_texts(frame["text"].tolist(), rust, 32, 1000)
    hf = AutoTokenizer.from_pretrained(base)
    expected = hf(frame["text"].tolist(), truncation=True, max_length=32)["input_ids"]
    assert ids == expected
    assert full[0] > 32 and len(ids[0]) == 32
    assert ids[0][-1] == hf.sep_token_id
