import json
from pathlib import Path

import pandas as pd
import pytest

from tunesmith.config import load_config
from tunesmith.errors import DataError
from tunesmith.tasks.ingest import ingest


def test_ingest_copies_source_and_writes_manifest(project: Path):
    result = ingest(load_config("toy", project))
    manifest = json.loads((result.raw_dir / "manifest.json").read_text())
    assert manifest["rows"] == 80
    assert (result.raw_dir / "source.csv").read_bytes() == (project / "data/toy.csv").read_bytes()
    assert manifest["sha256"] == result.digest
    assert list(pd.read_parquet(result.raw_dir / "rows.parquet").columns) == ["text", "label"]


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet", "hf"])
def test_ingest_reads_every_format(project: Path, fmt: str):
    frame = pd.read_csv(project / "data/toy.csv")
    target = project / "data" / f"toy.{fmt}"
    if fmt == "tsv":
        frame.to_csv(target, sep="\t", index=False)
    elif fmt == "jsonl":
        frame.to_json(target, orient="records", lines=True)
    elif fmt == "parquet":
        frame.to_parquet(target)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(target))
    cfg = load_config("toy", project, [f"source.path=data/toy.{fmt}"])
    assert ingest(cfg).rows == 80


def test_failed_ingest_keeps_previous_copy(project: Path):
    cfg = load_config("toy", project)
    first = ingest(cfg)
    with pytest.raises(DataError):
        ingest(load_config("toy", project, ["source.path=data/missing.csv"]))
    assert json.loads((first.raw_dir / "manifest.json").read_text())["rows"] == 80


def test_a_source_appended_to_during_ingest_gives_a_consistent_snapshot(project: Path,
                                                                        monkeypatch):
    """Ingest copies the source first and reads and hashes the copy: rows written to the
    source while it runs are not half in the manifest (the next ingest sees them)."""
    import hashlib

    import tunesmith.sources as sources

    source = project / "data" / "toy.csv"
    read = sources.read_table

    def appended_meanwhile(path, src, shown=None):
        with source.open("a", encoding="utf-8") as fh:  # the writer appends mid-ingest
            fh.write("a late message,pos\n" * 5)
        return read(path, src, shown)

    monkeypatch.setattr(sources, "read_table", appended_meanwhile)
    result = ingest(load_config("toy", project))
    copy = next((project / "data" / "raw" / "toy").glob("source.*"))
    manifest = json.loads((project / "data" / "raw" / "toy" / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert manifest["rows"] == result.rows == len(pd.read_csv(copy)) == 80
    assert len(pd.read_csv(source)) == 85  # the appended rows wait for the next data version
