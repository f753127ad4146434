"""Benchmarks start and their data builders do what the docs say; never a timed test.

The benchmarks themselves take minutes (docs/benchmarks.md); here each script must answer
`--help` and the pure helpers must produce the data the numbers are measured on.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


def load(name: str) -> ModuleType:
    """Import bench/NAME.py by path (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_answers_help(script: str):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_data_path_source_keeps_copies_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import pandas as pd

    bench = load("data_path")
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    base = pd.DataFrame({"label": ["0", "1"] * 5, "sentence": [f"film {i}" for i in range(10)]})
    base.to_csv(sst2 / "train.tsv", sep="\t", index=False)
    monkeypatch.setattr(bench, "SST2", sst2)
    path = tmp_path / "big.tsv"
    assert bench.make_source(path, 35) == 35
    frame = pd.read_csv(path, sep="\t", quoting=3, dtype=str)
    # Repeats must survive de-duplication, or the benchmark measures 67k rows, not 1M.
    assert len(frame) == frame["sentence"].nunique() == 35
    assert frame["sentence"].iloc[-1] == "film 4 (r3)"
    assert frame["label"].tolist()[:10] == base["label"].tolist()


def test_data_path_project_loads_as_config(tmp_path: Path):
    from tunesmith.config import load_config

    bench = load("data_path")
    bench.make_project(tmp_path / "proj", 120)
    cfg = load_config(bench.NAME, tmp_path / "proj")
    assert cfg.labels == ["negative", "positive"]
    assert cfg.label_map == {"0": "negative", "1": "positive"}


def test_train_throughput_rows_are_disjoint():
    bench = load("train_throughput")
    train, val = bench.load_rows(64)
    assert len(train) == 64 and len(val) == bench.N_VAL
    assert not set(train.index) & set(val.index)
    assert set(train["label"].astype(int)) <= {0, 1}


def test_pipeline_overhead_splits_the_run_by_step():
    from datetime import datetime

    bench = load("pipeline_overhead")
    log = ("10:00:05.000 | INFO | Flow run 'x' - Beginning flow run 'x' for flow 'retrain'\n"
           "10:00:06.500 | INFO | Task run 'ingest-sst' - Finished in state Completed()\n"
           "10:02:06.500 | INFO | Task run 'train-sst' - Finished in state Completed()\n")
    steps = bench.step_seconds(log, datetime(2026, 1, 1, 10, 0, 0), datetime(2026, 1, 1, 10, 2, 9))
    assert steps == {"startup": 5.0, "ingest": 1.5, "train": 120.0, "shutdown": 2.5}


def test_image_throughput_crop_follows_torchvision_and_times_add_up():
    import random

    bench = load("image_throughput")
    rng = random.Random(0)
    for _ in range(300):
        left, top, right, bottom = bench.crop_box(224, 164, 0.25, rng.random)
        assert 0 <= left < right <= 224 and 0 <= top < bottom <= 164
        w, h = right - left, bottom - top
        assert w * h >= 0.25 * 224 * 164 * 0.97  # rounding of the side lengths
        assert 0.7 <= w / h <= 1.4 or (w, h) == (224, 164)
    # No crop of that area and aspect fits: the whole image, as torchvision falls back.
    assert bench.crop_box(10, 1000, 1.0, lambda: 0.5) == (0, 0, 10, 1000)
    marks = [(float(i), {"decode": 0.1 * i, "augment": 0.2 * i, "forward": 0.3 * i})
             for i in range(6)]
    out = bench.breakdown(marks, batch=10)  # steps 2..5 timed: 30 images in 3 s
    assert out["timed_images"] == 30 and out["images_per_s"] == pytest.approx(10.0)
    ms = out["ms_per_image"]
    assert ms["decode"] == pytest.approx(10.0) and ms["forward"] == pytest.approx(30.0)
    assert sum(ms.values()) == pytest.approx(100.0)  # 1000 ms / 10 images per second


def test_hotdog_methods_reads_classes_from_folders(tmp_path: Path):
    bench = load("hotdog_methods")
    for label in ("hotdog", "not_hotdog"):
        (tmp_path / "val" / label).mkdir(parents=True)
        (tmp_path / "val" / label / "a.jpg").write_bytes(b"x")
    (tmp_path / "val" / "LICENSE").write_text("not an image")
    files, labels = bench.photos(tmp_path / "val")
    assert labels == ["hotdog", "not_hotdog"] and all(f.suffix == ".jpg" for f in files)
    assert set(bench.RUNS) >= {"full", "head_only", "freeze", "lora", "scratch"}
