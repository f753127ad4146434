"""Acceptance: `tunesmith dataset add` for each task type from each input shape the docs list,
then `dataset check`, and a run of what was added: a data team's first hour, through the real
CLI on a copy of the repository as shipped (tests/acceptance.py).

The data is the shipped samples written out in each shape (the SMS table as CSV, TSV, JSON,
JSONL, parquet, a saved DatasetDict and per-split files; the shapes photos as class folders
and as train/ val/ folders) and Alpaca-shaped instruction rows of real lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from acceptance import REPO, SHARED_DATA, TINY, clean_console, cli, ok, shipped_copy
from conftest import alpaca_rows

SET_TINY = [a for pair in TINY for a in ("--set", pair)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = shipped_copy(tmp_path_factory.mktemp("onboarding"))
    (root / "incoming").mkdir()
    return root


def _spec(root: Path, name: str) -> dict:
    return yaml.safe_load((root / "datasets" / f"{name}.yaml").read_text())


def _sms() -> pd.DataFrame:
    return pd.read_csv(REPO / "data" / "samples" / "sms_spam.csv", dtype=str)


def _text_source(root: Path, shape: str) -> str:
    """The SMS sample as `shape`; the path `dataset add --source` gets."""
    frame = _sms().rename(columns={"text": "message", "label": "kind"})
    out = root / "incoming" / f"sms-{shape}"
    if shape == "csv":
        frame.to_csv(out.with_suffix(".csv"), index=False)
        return str(out.with_suffix(".csv"))
    if shape == "tsv":
        frame.to_csv(out.with_suffix(".tsv"), sep="\t", index=False)
        return str(out.with_suffix(".tsv"))
    if shape == "json":
        out.with_suffix(".json").write_text(frame.to_json(orient="records"))
        return str(out.with_suffix(".json"))
    if shape == "jsonl":
        frame.to_json(out.with_suffix(".jsonl"), orient="records", lines=True)
        return str(out.with_suffix(".jsonl"))
    if shape == "parquet":
        frame.to_parquet(out.with_suffix(".parquet"), index=False)
        return str(out.with_suffix(".parquet"))
    if shape == "hf":
        import datasets

        whole = datasets.Dataset.from_pandas(frame, preserve_index=False)
        datasets.DatasetDict({"train": whole.select(range(320)),
                              "test": whole.select(range(320, len(frame)))}).save_to_disk(
            str(out))
        return str(out)
    if shape == "files":  # a folder of tables named by split
        out.mkdir()
        frame.iloc[:320].to_csv(out / "train.csv", index=False)
        frame.iloc[320:].to_csv(out / "test.csv", index=False)
        return str(out)
    raise AssertionError(shape)


@pytest.mark.parametrize("shape", ["csv", "tsv", "json", "jsonl", "parquet", "hf", "files"])
def test_dataset_add_a_text_table_in_every_format(project: Path, shape: str):
    name = f"sms_{shape}"
    out = ok(cli(project, "dataset", "add", name, "--source", _text_source(project, shape),
                 "--text-col", "message", "--label-col", "kind", "--label-map", "ham=ok",
                 "--label-map", "spam=junk")).stdout
    assert "validation: passed" in out and f"wrote {project / 'datasets' / name}.yaml" in out
    spec = _spec(project, name)
    assert spec["labels"] == ["junk", "ok"] and spec["columns"] == {"text": "message",
                                                                    "label": "kind"}
    if shape in ("hf", "files"):  # the given split is kept: test is the 80 held-out rows
        assert "test 80; given train/test" in out, out
    assert f"{name}-register" in (project / "dvc.yaml").read_text()
    assert f"retrain-{name}" in (project / "prefect.yaml").read_text()


def _chat_source(root: Path, shape: str) -> str:
    rows = alpaca_rows(120, most_steps=17)  # original Alpaca's lengths
    out = root / "incoming" / f"chat-{shape}"
    if shape == "alpaca-json":
        out.with_suffix(".json").write_text(json.dumps(rows))
        return str(out.with_suffix(".json"))
    if shape == "messages-jsonl":
        out.with_suffix(".jsonl").write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": r["instruction"]},
            {"role": "assistant", "content": r["output"]}]}) + "\n" for r in rows))
        return str(out.with_suffix(".jsonl"))
    if shape == "sharegpt-jsonl":
        out.with_suffix(".jsonl").write_text("".join(json.dumps({"conversations": [
            {"from": "human", "value": r["instruction"]},
            {"from": "gpt", "value": r["output"]}]}) + "\n" for r in rows))
        return str(out.with_suffix(".jsonl"))
    if shape == "prompt-response-csv":
        pd.DataFrame({"question": [r["instruction"] for r in rows],
                      "answer": [r["output"] for r in rows]}).to_csv(
            out.with_suffix(".csv"), index=False)
        return str(out.with_suffix(".csv"))
    raise AssertionError(shape)


@pytest.mark.parametrize("shape", ["alpaca-json", "messages-jsonl", "sharegpt-jsonl",
                                   "prompt-response-csv"])
def test_dataset_add_instruction_data_in_every_shape(project: Path, shape: str):
    """Real-length rows pass without hand edits: `dataset add` measures them and writes the
    tokenize.max_length that covers 99% (the text default, 128, refused a third of them)."""
    name = "chat_" + shape.split("-")[0]
    extra = ["--prompt-col", "question", "--response-col", "answer"] \
        if shape == "prompt-response-csv" else []
    out = ok(cli(project, "dataset", "add", name, "--source", _chat_source(project, shape),
                 "--task", "causal-lm", *extra)).stdout
    assert "tokenize.max_length: " in out and "validation: passed" in out, out
    spec = _spec(project, name)
    assert spec["tokenize"]["max_length"] > 128 and spec["model"]["base"] == \
        "SmolLM2-135M-Instruct"


@pytest.mark.slow  # ~2.5 min: two steps of 32 instruction rows, then generation; the fast
# tier has the same `dataset add` and the README's LLM run (tests/test_acceptance_run.py)
def test_the_added_alpaca_dataset_runs_at_the_defaults_and_answers(project: Path):
    """Alpaca JSON -> dataset add -> run -> predict with no hand edits: LoRA at the defaults
    (batch 32, the CPU token budget), two steps, under 4 GB."""
    if not (project / "datasets" / "chat_alpaca.yaml").is_file():
        ok(cli(project, "dataset", "add", "chat_alpaca", "--source",
               _chat_source(project, "alpaca-json"), "--task", "causal-lm"))
    run = ok(cli(project, "run", "--dataset", "chat_alpaca", *SET_TINY))
    assert "chat_alpaca: completed" in run.stdout
    clean_console(run)
    summary = json.loads((project / "models" / "chat_alpaca" / "train_summary.json").read_text())
    assert summary["batch_tokens"] == 512 and summary["peak_memory_mb"] < 4096
    answer = ok(cli(project, "predict", "--dataset", "chat_alpaca", "--alias", "challenger",
                    "Explain how to prepare recipe 3.", "--max-new-tokens", "8")).stdout
    assert answer.rstrip().endswith("Explain how to prepare recipe 3.")


def _photos(root: Path, layout: str) -> Path:
    """The shapes sample as class folders, or as train/ and val/ above them (hot dog's)."""
    import shutil

    src = REPO / "data" / "samples" / "shapes"
    out = root / "incoming" / f"photos-{layout}"
    for cls in ("horizontal", "vertical"):
        for i, f in enumerate(sorted((src / cls).glob("*.png"))):
            split = "" if layout == "classes" else ("val" if i % 4 == 0 else "train")
            target = out / split / cls
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target / f.name)
    return out


@pytest.mark.parametrize("layout", ["classes", "split-folders"])
def test_dataset_add_image_folders(project: Path, layout: str):
    name = f"photos_{layout.replace('-', '_')}"
    out = ok(cli(project, "dataset", "add", name, "--source", str(_photos(project, layout)),
                 "--task", "image-classification", "--set", "validate.min_rows=40")).stdout
    assert "validation: passed" in out, out
    spec = _spec(project, name)
    assert spec["labels"] == ["horizontal", "vertical"]
    assert spec["train"]["optimizer"] == "sgd"  # the transfer-learning recipe, written
    if layout == "split-folders":
        assert "test 20; given train/val (its val is the test split)" in out, out


def test_an_added_image_dataset_runs_on_efficientnet_lite0(project: Path):
    """The default image base, EfficientNet-Lite0 (converted once), through `run` with the
    train/ val/ photos; `predict` on a folder of them."""
    name = "photos_split_folders"
    if not (project / "datasets" / f"{name}.yaml").is_file():
        test_dataset_add_image_folders(project, "split-folders")
    assert "base" not in _spec(project, name).get("model", {}) or \
        _spec(project, name)["model"]["base"] == "efficientnet-lite0"
    run = ok(cli(project, "run", "--dataset", name, *SET_TINY))
    assert f"{name}: completed" in run.stdout
    clean_console(run)
    folder = project / "incoming" / "photos-split-folders" / "val" / "vertical"
    answer = ok(cli(project, "predict", "--dataset", name, "--alias", "challenger",
                    str(folder))).stdout.splitlines()
    assert len(answer) == len(list(folder.glob("*.png")))


def test_dataset_check_on_every_shipped_dataset(project: Path):
    for name in ("sms_spam", "assistant", "shapes"):
        out = ok(cli(project, "dataset", "check", name)).stdout
        assert "validation: passed" in out, (name, out)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "sst2" / "train.tsv").is_file(),
                    reason="SST-2 not found at ../shared/data/sst2 (docs/adding-a-dataset.md)")
def test_the_adding_a_dataset_walkthrough_on_sst2(project: Path):
    """docs/adding-a-dataset.md as written: add SST-2 with label names, the stricter check
    that fails with exit 4, then `tunesmith run --dataset sst2` (two steps here)."""
    source = str(SHARED_DATA / "sst2" / "train.tsv")
    out = ok(cli(project, "dataset", "add", "sst2", "--source", source, "--text-col",
                 "sentence", "--label-col", "label", "--label-map", "0=negative",
                 "--label-map", "1=positive", timeout=1200)).stdout
    assert "67349 rows in" in out and "validation: passed" in out
    strict = cli(project, "dataset", "check", "sst2", "--set", "validate.max_text_chars=200",
                 "--set", "validate.min_class_share=0.45", timeout=1200)
    assert strict.returncode == 4 and "expect_column_value_lengths_to_be_between(text)" in \
        strict.stdout
    run = ok(cli(project, "run", "--dataset", "sst2", *SET_TINY, timeout=2400))
    assert "sst2: completed" in run.stdout
