"""The `validate` step: real Great Expectations on clean parquet splits written by the test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows

from tunesmith.config import Config, load_config
from tunesmith.errors import DataError, ValidationFailed
from tunesmith.tasks.validate import ValidateResult, validate

# conftest's toy dataset: labels [neg, pos], min_rows 10, min_class_share 0.2, drift <= 0.3.
Splits = dict[str, pd.DataFrame]


def balanced() -> Splits:
    """60 unique rows, alternating pos/neg: 40 train, 10 val, 10 test, every split balanced."""
    df = pd.DataFrame(make_rows(60), columns=["text", "label"])
    return {"train": df[:40].reset_index(drop=True), "val": df[40:50].reset_index(drop=True),
            "test": df[50:].reset_index(drop=True)}


def write_splits(cfg: Config, splits: Splits) -> None:
    cfg.dirs.clean.mkdir(parents=True, exist_ok=True)
    for name, df in splits.items():
        df.to_parquet(cfg.dirs.clean / f"{name}.parquet", index=False)


def run(project: Path, splits: Splits, *overrides: str) -> ValidateResult:
    cfg = load_config("toy", project, list(overrides))
    write_splits(cfg, splits)
    return validate(cfg, raise_on_failure=False)


def failed_checks(result: ValidateResult) -> dict[str, dict]:
    """'batch: expectation(column)' -> record, for each failed expectation in result.json."""
    records = json.loads(result.report_path.read_text())["expectations"]
    return {
        f"{r['batch']}: {r['expectation']}" + (f"({r['column']})" if r["column"] else ""): r
        for r in records if not r["success"]
    }


def test_clean_dataset_passes_and_writes_reports_and_data_docs(project: Path):
    result = run(project, balanced())

    assert result.success and result.n_failed == 0 and result.failures == []
    # 7 checks on each of 3 splits, 3 on the stacked dataset, class shares, label drift.
    assert result.n_expectations == 7 * 3 + 3 + 1 + 1
    report = json.loads(result.report_path.read_text())
    assert report["success"] is True and report["rows"] == {"train": 40, "val": 10, "test": 10}
    assert set(report["gx"]) == {"train", "val", "test", "dataset", "class_shares", "label_drift"}
    assert "passed" in result.summary_path.read_text()
    docs = result.docs_index.parent
    assert result.docs_index == result.report_path.parent / "data_docs" / "index.html"
    assert result.docs_index.is_file()
    # One validation page per batch, under GX's usual validations/<suite>/<run>/... layout.
    assert len(list((docs / "validations").rglob("*.html"))) == 6


def _label_outside_set(s: Splits) -> None:
    s["train"].loc[3, "label"] = "meh"


def _text_too_long(s: Splits) -> None:
    s["val"].loc[2, "text"] = "x" * 5001


def _null_text(s: Splits) -> None:
    # Nulls in two splits: reported as nulls, not as one text shared by both splits.
    s["test"].loc[4, "text"] = None
    s["train"].loc[5, "text"] = None


def _rare_class(s: Splits) -> None:
    # Keep 1 neg in 10 rows of every split: neg share 0.1 < 0.2, yet no train/test drift.
    for name, df in s.items():
        pos, neg = df[df.label == "pos"], df[df.label == "neg"]
        s[name] = pd.concat([pos, neg[: max(1, len(pos) // 9)]], ignore_index=True)


def _overlap(s: Splits) -> None:
    s["test"].loc[0, "text"] = s["train"].loc[0, "text"]


def _drift(s: Splits) -> None:
    s["test"]["label"] = "pos"  # test 100% pos vs train 50%: drift 0.5 > 0.3


def _missing_column(s: Splits) -> None:
    s["val"] = s["val"].drop(columns=["label"])


FAILURES = {
    # kind: (mutation, overrides, {failed check: text that must appear in its offending rows})
    "label_outside_set": (_label_outside_set, (), {
        "train: expect_column_values_to_be_in_set(label)": "row 3: 'meh'"}),
    "text_too_long": (_text_too_long, (), {
        "val: expect_column_value_lengths_to_be_between(text)": "row 2: 'xxx"}),
    "null_text": (_null_text, (), {
        "test: expect_column_values_to_not_be_null(text)": "row 4",
        "train: expect_column_values_to_not_be_null(text)": "row 5"}),
    "too_few_rows": (lambda s: None, ("validate.min_rows=100",), {
        "dataset: expect_table_row_count_to_be_between": ""}),
    "too_few_split_rows": (lambda s: None, ("validate.min_split_rows=20",), {
        "val: expect_table_row_count_to_be_between": "",
        "test: expect_table_row_count_to_be_between": ""}),
    "class_below_min_share": (_rare_class, (), {
        "class_shares: expect_column_values_to_be_between(share)": "label='neg'"}),
    "overlap_between_splits": (_overlap, (), {
        "dataset: expect_column_values_to_be_in_set(in_other_split)": "split='test' row=0"}),
    "label_drift": (_drift, (), {
        "label_drift: expect_column_values_to_be_between(drift)": "label='neg' train_share=0.5"}),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_each_failure_kind_names_its_expectation_and_rows(project: Path, kind: str):
    mutate, overrides, expected = FAILURES[kind]
    splits = balanced()
    mutate(splits)

    result = run(project, splits, *overrides)

    failed = failed_checks(result)
    assert set(failed) == set(expected), f"{kind}: {sorted(failed)}"
    for check, row_text in expected.items():
        examples = "; ".join(failed[check]["examples"])
        assert row_text in examples, f"{check}: {examples!r}"
        assert any(line.startswith(check) for line in result.failures)
    summary = result.summary_path.read_text()
    assert summary.count("**FAILED**") == len(expected)


def test_failure_observed_values_name_the_numbers(project: Path):
    result = run(project, balanced(), "validate.min_rows=100")
    assert failed_checks(result)["dataset: expect_table_row_count_to_be_between"][
        "observed"] == "60"

    splits = balanced()
    _overlap(splits)
    (rec,) = failed_checks(run(project, splits)).values()
    # The text occurs once in train and once in test: both rows are offending.
    assert rec["observed"] == "2 of 60 rows unexpected"
    assert rec["examples"][0].startswith("split='train' row=0 text=")


def test_missing_column_fails_the_split_and_skips_cross_split_checks(project: Path):
    splits = balanced()
    _missing_column(splits)
    result = run(project, splits)

    failed = failed_checks(result)
    assert "val: expect_column_to_exist(label)" in failed
    assert failed["val: expect_column_to_exist(label)"]["observed"] == "column missing"
    assert all(name.startswith("val: ") for name in failed)
    assert result.n_expectations == 7 * 3  # no dataset / class_shares / label_drift batches


def test_failure_raises_one_line_and_still_writes_the_detail(project: Path):
    cfg = load_config("toy", project)
    splits = balanced()
    _label_outside_set(splits)
    _overlap(splits)
    write_splits(cfg, splits)

    with pytest.raises(ValidationFailed) as info:
        validate(cfg)

    message = str(info.value)
    assert "\n" not in message
    assert "'toy'" in message and "2 of 26 expectations failed" in message
    assert "train: expect_column_values_to_be_in_set(label)" in message
    assert str(cfg.dirs.validation / "summary.md") in message
    report = json.loads((cfg.dirs.validation / "result.json").read_text())
    assert report["success"] is False and report["n_failed"] == 2
    summary = (cfg.dirs.validation / "summary.md").read_text()
    assert "FAILED (2 of 26 expectations)" in summary and "row 3: 'meh'" in summary
    assert (cfg.dirs.validation / "data_docs" / "index.html").is_file()


def test_missing_clean_split_is_a_data_error_naming_the_file(project: Path):
    cfg = load_config("toy", project)
    write_splits(cfg, {k: v for k, v in balanced().items() if k != "val"})
    with pytest.raises(DataError, match=r"val\.parquet: not found; run `tunesmith step clean"):
        validate(cfg)


def test_empty_split_with_zero_fraction_is_allowed(project: Path):
    splits = balanced()
    splits["val"] = splits["val"][:0]
    fractions = ("clean.split.train=0.9", "clean.split.val=0", "clean.split.test=0.1")
    assert run(project, splits, *fractions).success
    assert not run(project, splits).success  # val is configured, so it must have rows


def test_causal_lm_suite(project: Path, tiny_llama: Path):
    """Conversations made by the real ingest and clean; a prompt context in two splits is a
    leak, and the token budget (validate.max_truncated_share) fails on a tight max_length."""
    from tunesmith.tasks.clean import clean
    from tunesmith.tasks.ingest import ingest

    rows = [{"messages": [{"role": "user", "content": f"question {i}?"},
                          {"role": "assistant", "content": f"answer {i}."}]} for i in range(30)]
    (project / "data" / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "datasets" / "chat.yaml").write_text(
        "task: causal-lm\nsource: {path: data/chat.jsonl}\ncolumns: {messages: messages}\n"
        f"validate: {{min_rows: 10}}\nmodel: {{base: {tiny_llama}}}\n", encoding="utf-8")
    cfg = load_config("chat", project)
    ingest(cfg)
    clean(cfg)
    assert validate(cfg).success

    train = pd.read_parquet(cfg.dirs.clean / "train.parquet")
    test = pd.read_parquet(cfg.dirs.clean / "test.parquet")
    test.loc[1, ["context", "prompt"]] = train.loc[7, ["context", "prompt"]].to_numpy()
    test.to_parquet(cfg.dirs.clean / "test.parquet")
    with pytest.raises(ValidationFailed, match=r"dataset: expect_column_values_to_be_in_set"):
        validate(cfg)
    report = json.loads((cfg.dirs.validation / "result.json").read_text())
    (bad,) = [r for r in report["expectations"] if not r["success"]]
    assert any("split='test' row=1" in e for e in bad["examples"])

    clean(cfg)  # the clean splits again; now a budget no row fits in
    tight = load_config("chat", project, ["tokenize.max_length=8"])
    with pytest.raises(ValidationFailed, match=r"tokens: expect_column_values_to_be_in_set"
                                               r"\(truncated\)"):
        validate(tight)


def test_library_imports_without_great_expectations():
    code = (
        "import sys, tunesmith.validation, tasks.validate; "
        "assert 'great_expectations' not in sys.modules, 'GX imported at module level'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_one_million_rows_validate_well_under_30_seconds(project: Path):
    import numpy as np

    n = 1_000_000
    rng = np.random.default_rng(0)
    words = np.array("the film was really quite plot acting and story great awful dull".split())
    text = pd.Series([" ".join(w) for w in words[rng.integers(0, len(words), (n, 12))]])
    df = pd.DataFrame({"text": text + " " + pd.Series(np.arange(n).astype(str)),
                       "label": rng.choice(["neg", "pos"], n)})
    cfg = load_config("toy", project)
    write_splits(cfg, {"train": df[:800_000], "val": df[800_000:900_000],
                       "test": df[900_000:]})

    started = time.perf_counter()
    result = validate(cfg)
    seconds = time.perf_counter() - started

    assert result.success
    assert seconds < 30, f"validate took {seconds:.1f}s on {n} rows"
