"""Every kind of bad input: one clear line naming file/field/row, non-zero exit, source intact."""

import hashlib
from pathlib import Path

import pytest
from cli_helpers import run_cli
from conftest import make_rows, write_csv


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def _bad_source(project: Path, content: bytes | None = None, rows=None, header=("text", "label")):
    path = project / "data" / "toy.csv"
    if content is not None:
        path.write_bytes(content)
    elif rows is not None:
        write_csv(path, rows, header)
    return path


CASES = {
    "missing file": (lambda p: (p / "data/toy.csv").unlink(), "ingest", "file not found"),
    "bad encoding": (lambda p: _bad_source(
        p, "text,label\ncaf\xe9 au lait,pos\n".encode("latin-1")),
                     "ingest", "not valid utf-8"),
    "wrong delimiter": (lambda p: _bad_source(p, b"text;label\nhello there;pos\nbad one;neg\n"),
                        "ingest", "wrong delimiter?"),
    "missing label column": (lambda p: _bad_source(p, rows=make_rows(20), header=("text", "y")),
                             "ingest", "column 'label' not found"),
    "empty file": (lambda p: _bad_source(p, b""), "ingest", "file is empty"),
    "header only": (lambda p: _bad_source(p, b"text,label\n"), "ingest", "no data rows"),
    "zero rows after cleaning": (lambda p: _bad_source(p, rows=[("", "pos"), ("  ", "neg")]),
                                 "clean", "zero rows left after cleaning"),
    "label outside set": (lambda p: _bad_source(p, rows=make_rows(10) + [("odd one", "meh")]),
                          "clean", "row 11: label 'meh' is not in labels"),
    "single class": (lambda p: _bad_source(p, rows=[(t, "pos") for t, _ in make_rows(20)]),
                     "clean", "only one class ('pos')"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_source_fails_with_one_line(case, project, monkeypatch, capsys):
    make_bad, failing_step, needle = CASES[case]
    make_bad(project)
    source = project / "data" / "toy.csv"
    before = _digest(source)
    for step in ("ingest", "clean"):
        result = run_cli(["step", step, "--dataset", "toy"], project, monkeypatch, capsys)
        if step == failing_step:
            break
        assert result.code == 0, result.err
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert needle in lines[0]
    assert "toy" in lines[0]  # names the file
    assert "Traceback" not in result.err + result.out
    assert _digest(source) == before  # the source is never modified
    if failing_step == "clean":
        assert not (project / "data" / "clean" / "toy").exists()


@pytest.mark.parametrize(("yaml_extra", "needle"), [
    ("colour: blue", "toy.yaml: colour: unknown key"),
    ("clean: {split: {train: -0.1, val: 0.6, test: 0.5}}", "clean.split.train: Input should be"),
    ("clean: {split: {train: 0.7, val: 0.2, test: 0.2}}", "split fractions must sum to 1"),
])
def test_bad_config_fails_with_one_line(yaml_extra, needle, project, monkeypatch, capsys):
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text() + yaml_extra + "\n")
    result = run_cli(["step", "ingest", "--dataset", "toy"], project, monkeypatch, capsys)
    assert result.code == 2
    assert result.err.strip().count("\n") == 0 and needle in result.err
    assert not (project / "data" / "raw" / "toy").exists()


def test_bad_set_override(project, monkeypatch, capsys):
    result = run_cli(["step", "clean", "--dataset", "toy", "--set", "clean.split.test=-1"],
                     project, monkeypatch, capsys)
    assert result.code == 2 and "--set: clean.split.test" in result.err


def test_missing_model_is_one_line(project, monkeypatch, capsys):
    for step in ("ingest", "clean"):
        assert run_cli(["step", step, "-d", "toy"], project, monkeypatch, capsys).code == 0
    result = run_cli(["step", "tokenize", "-d", "toy", "--set", "model.base=./no/such/model"],
                     project, monkeypatch, capsys)
    assert result.code != 0 and "model" in result.err and "Traceback" not in result.err
