import json
from pathlib import Path

import pandas as pd
from conftest import make_rows, write_csv

from tunesmith.cleaning import dedup_key
from tunesmith.config import load_config
from tunesmith.tasks.clean import clean
from tunesmith.tasks.ingest import ingest


def _run(project: Path, rows, *overrides):
    write_csv(project / "data" / "toy.csv", rows)
    cfg = load_config("toy", project, list(overrides))
    ingest(cfg)
    return cfg, clean(cfg)


def test_clean_drops_by_reason_and_splits_without_leaks(project: Path):
    rows = make_rows(60)
    rows += [
        ("", "pos"),                                  # empty
        ("  <b>Great</b>   film &amp; fun  ", "pos"),  # html + whitespace: kept, cleaned
        (rows[0][0], rows[0][1]),                    # exact duplicate
        (rows[1][0].upper() + "!!", rows[1][1]),     # normalised duplicate
        ("same text both ways", "pos"), ("Same text, both ways", "neg"),  # conflicting
        ("x" * 300, "neg"),                           # too long
        ("no label here", ""),                        # missing label
    ]
    cfg, result = _run(project, rows, "clean.strip_html=true", "clean.max_chars=200")
    assert result.dropped == {"missing_label": 1, "empty_text": 1, "too_long": 1,
                              "duplicate_exact": 1, "conflicting_label": 2,
                              "duplicate_normalised": 1}
    assert result.rows_out == 61
    report = json.loads((cfg.dirs.clean / "report.json").read_text())
    assert report["conflicting_labels"][0]["text"].lower().startswith("same text")
    splits = {s: pd.read_parquet(cfg.dirs.clean / f"{s}.parquet") for s in ("train", "val", "test")}
    assert "Great film & fun" in set(pd.concat(splits.values())["text"])
    keys = {s: set(dedup_key(f["text"])) for s, f in splits.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    assert set(splits["test"]["label"]) == {"neg", "pos"}  # stratified
    dropped = pd.read_csv(cfg.dirs.clean / "dropped.csv")
    assert set(dropped["reason"]) == set(result.dropped)


def test_split_is_seeded_and_stratified(project: Path):
    cfg, first = _run(project, make_rows(100))
    a = pd.read_parquet(cfg.dirs.clean / "test.parquet")
    cfg, _ = _run(project, make_rows(100))
    assert a.equals(pd.read_parquet(cfg.dirs.clean / "test.parquet"))
    assert first.split_sizes == {"train": 80, "val": 10, "test": 10}
    assert a["label"].value_counts().to_dict() == {"neg": 5, "pos": 5}
    cfg, _ = _run(project, make_rows(100), "clean.split.seed=1")
    assert not a.equals(pd.read_parquet(cfg.dirs.clean / "test.parquet"))


def test_label_map_and_lowercase(project: Path):
    rows = [(t, "1" if lab == "pos" else "0") for t, lab in make_rows(40)]
    cfg, result = _run(project, rows, "label_map={0: neg, 1: pos}", "clean.lowercase=true")
    train = pd.read_parquet(cfg.dirs.clean / "train.parquet")
    assert set(train["label"]) == {"neg", "pos"}
    assert (train["text"] == train["text"].str.lower()).all()
