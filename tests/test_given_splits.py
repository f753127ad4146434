"""Splits the data already has are kept (clean.split.given: keep): train/ and val/ folders
above the class folders, a folder of per-split tables, a split column, a saved DatasetDict.
The given held-out split is the test split; val is carved from train when none is given; a
row in two given splits fails validation, named; `resplit` pools them again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, make_rows, write_csv

from tunesmith.config import load_config
from tunesmith.errors import DataError, ValidationFailed
from tunesmith.tasks.clean import clean
from tunesmith.tasks.ingest import ingest
from tunesmith.tasks.validate import validate


def _splits(cfg) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(cfg.dirs.clean / f"{s}.parquet") for s in ("train", "val", "test")}


def _steps(cfg):
    ingest(cfg)
    return clean(cfg)


def test_per_split_files_keep_their_split_and_val_is_carved_from_train(project: Path):
    rows = make_rows(100)
    folder = project / "data" / "glue"
    folder.mkdir()
    write_csv(folder / "train.csv", rows[:80])
    write_csv(folder / "dev.csv", rows[80:])  # GLUE's name for the held-out split
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("data/toy.csv", "data/glue"))
    cfg = load_config("toy", project)
    _steps(cfg)
    splits = _splits(cfg)
    held_out = {t for t, _ in rows[80:]}
    assert set(splits["test"]["text"]) == held_out  # dev.csv is the test split, whole
    # 1:8 of train as 0.1:0.8 says, per class: 2 x round(40 / 9)
    assert len(splits["val"]) == 8 and len(splits["train"]) == 72
    assert not set(splits["val"]["text"]) & held_out
    report = (cfg.dirs.clean / "report.json").read_text()
    assert "given train/val (its val is the test split), val carved from train" in report

    resplit = load_config("toy", project, ["clean.split.given=resplit"])
    _steps(resplit)
    assert set(_splits(resplit)["test"]["text"]) != held_out  # pooled and split at random


def test_a_split_column_and_a_row_in_two_splits(project: Path):
    rows = make_rows(60)
    split = ["train"] * 40 + ["validation"] * 10 + ["test"] * 10
    frame = pd.DataFrame({"text": [t for t, _ in rows], "label": [lab for _, lab in rows],
                          "part": split})
    frame.to_csv(project / "data" / "toy.csv", index=False)
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("columns: {text: text, label: label}",
                                             "columns: {text: text, label: label, split: part}"))
    cfg = load_config("toy", project)
    _steps(cfg)
    sizes = {s: len(f) for s, f in _splits(cfg).items()}
    assert sizes == {"train": 40, "val": 10, "test": 10}  # all three given: kept as they are
    validate(cfg)

    leaked = pd.concat([frame, frame.iloc[[0]].assign(part="test")])  # a train row in test
    leaked.to_csv(project / "data" / "toy.csv", index=False)
    _steps(cfg)
    with pytest.raises(ValidationFailed, match="in_other_split"):
        validate(cfg)  # kept in both given splits so the leak check names it, not hidden

    frame.assign(part=["train"] * 59 + ["holdout"]).to_csv(project / "data" / "toy.csv",
                                                          index=False)
    with pytest.raises(DataError, match="row 60: split 'holdout' is not one of"):
        ingest(cfg)


def test_a_saved_dataset_dict_keeps_its_splits(project: Path):
    import datasets

    rows = make_rows(60)
    as_dict = {"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}
    whole = datasets.Dataset.from_dict(as_dict)
    datasets.DatasetDict({"train": whole.select(range(48)),
                          "test": whole.select(range(48, 60))}).save_to_disk(
        str(project / "data" / "hfdict"))
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("data/toy.csv", "data/hfdict"))
    cfg = load_config("toy", project)
    _steps(cfg)
    splits = _splits(cfg)
    assert set(splits["test"]["text"]) == set(as_dict["text"][48:])
    assert len(splits["val"]) + len(splits["train"]) == 48 and len(splits["val"]) == 6


def test_image_folders_train_and_val_keep_the_tutorials_split(tmp_path: Path):
    """hot dog's layout: <split>/<class>/*.jpg. The 'val' folder is the test split (its
    photos are what published figures were measured on); val comes out of train."""
    root = tmp_path / "proj"
    (root / "datasets").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    src = REPO / "data" / "samples" / "shapes"
    held_out = set()
    for cls in ("horizontal", "vertical"):
        for i, f in enumerate(sorted((src / cls).glob("*.png"))):
            split = "val" if i % 4 == 0 else "train"
            (root / "pics" / split / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / "pics" / split / cls / f.name)
            if split == "val":
                held_out.add(f"{split}/{cls}/{f.name}")
    (root / "datasets" / "pics.yaml").write_text(
        "task: image-classification\nsource: {path: pics}\n"
        "columns: {image: image, label: label}\nlabels: [horizontal, vertical]\n"
        "model: {base: data/none}\n")
    cfg = load_config("pics", root)
    _steps(cfg)
    splits = _splits(cfg)
    assert set(splits["test"]["path"]) == held_out and len(held_out) == 20
    assert len(splits["val"]) == 6 and len(splits["train"]) == 54
    assert not set(splits["val"]["path"]) & held_out
