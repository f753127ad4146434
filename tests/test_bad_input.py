"""Every kind of bad input, through every door: one clear line naming the file, field or row,
a non-zero exit, no traceback, nothing registered and the source untouched.

`CASES` is the table in docs/bad-input.md, row by row (a test checks the two agree); rows
whose door is `run` or `dvc repro` are tested where those doors are (tests/test_cli_entry.py,
tests/test_dvc_repro.py, tests/test_flow.py), named in `ELSEWHERE`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import run_cli
from conftest import REPO, make_rows, write_csv

DOC = REPO / "docs" / "bad-input.md"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def write(project: Path, content: bytes | str, name: str = "toy.csv") -> None:
    path = project / "data" / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def rows(project: Path, data, header=("text", "label")) -> None:
    write_csv(project / "data" / "toy.csv", data, header)


def dataset_yaml(project: Path, extra: str) -> None:
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text() + extra + "\n")


def replace_yaml(project: Path, old: str, new: str) -> None:
    path = project / "datasets" / "toy.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))


def chat(project: Path, items: list, max_length: int = 128) -> None:
    write(project, "".join(json.dumps(r) + "\n" for r in items), "chat.jsonl")
    (project / "datasets" / "chat.yaml").write_text(
        "task: causal-lm\nsource: {path: data/chat.jsonl}\ncolumns: {messages: messages}\n"
        f"validate: {{min_rows: 5}}\ntokenize: {{max_length: {max_length}}}\n"
        "model: {base: TINY_LLAMA}\n")


def turn(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}?"},
                         {"role": "assistant", "content": f"answer {i}."}]}


def images(project: Path, classes=("a", "b"), n: int = 6, broken: int = 0) -> None:
    from PIL import Image

    for label in classes:
        folder = project / "data" / "imgs" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (40 * i, 100 if label == "a" else 200, 0)).save(
                folder / f"{i}.png")
    for i in range(broken):
        (project / "data" / "imgs" / classes[0] / f"bad{i}.png").write_bytes(b"not a png")
    (project / "datasets" / "imgs.yaml").write_text(
        "task: image-classification\nsource: {path: data/imgs}\n"
        "columns: {image: image, label: label}\n"
        f"labels: [{', '.join(classes)}]\nvalidate: {{min_rows: 4, min_class_share: 0.1}}\n"
        "model: {base: TINY_RESNET}\n")


@dataclass(frozen=True)
class Case:
    """One row of docs/bad-input.md: what is wrong, the door, the line, the exit code."""

    setup: Callable[[Path], None]
    args: tuple[str, ...]  # the door: tunesmith ARGS...
    needle: str  # in the one error line
    code: int  # 2 config, 3 data, 4 validation, 5 environment
    first: tuple[str, ...] = ()  # steps that must succeed before (e.g. ingest before clean)
    untouched: str = ""  # an output that must not exist afterwards (nothing written)


def _step(step: str, dataset: str = "toy", *extra: str) -> tuple[str, ...]:
    return ("step", step, "--dataset", dataset, *extra)


CASES: dict[str, Case] = {
    # ----- the source file, at ingest or clean
    "missing source file": Case(lambda p: (p / "data/toy.csv").unlink(), _step("ingest"),
                                "file not found", 3),
    "bad encoding": Case(lambda p: write(p, "text,label\ncaf\xe9 au lait,pos\n".encode("latin-1")),
                         _step("ingest"), "not valid utf-8", 3),
    "wrong delimiter": Case(lambda p: write(p, "text;label\nhello there;pos\nbad one;neg\n"),
                            _step("ingest"), "wrong delimiter?", 3),
    "ragged row (first)": Case(lambda p: write(p, "text,label\nbad, row,neg\nfine,pos\n"),
                               _step("ingest"), "line 2 has 3 fields but the header has 2", 3),
    "ragged rows (later)": Case(
        lambda p: write(p, "text,label\nok,pos\nfine,neg\nx, y,pos\nz, w,neg\n"),
        _step("ingest"), "line 4 has 3 fields but the header has 2 (2 rows like it: lines 4, 5)",
        3),
    "missing label column": Case(lambda p: rows(p, make_rows(20), ("text", "y")),
                                 _step("ingest"), "column 'label' not found", 3),
    "empty file": Case(lambda p: write(p, b""), _step("ingest"), "file is empty", 3),
    "header only": Case(lambda p: write(p, "text,label\n"), _step("ingest"), "no data rows", 3),
    "unknown extension": Case(lambda p: (write(p, "x", "toy.xlsx"),
                                         replace_yaml(p, "data/toy.csv", "data/toy.xlsx")),
                              _step("ingest"), "can't infer the format from '.xlsx'", 3),
    "damaged parquet": Case(lambda p: (write(p, b"PAR1 not really", "toy.parquet"),
                                       replace_yaml(p, "data/toy.csv", "data/toy.parquet")),
                            _step("ingest"), "can't parse as parquet", 3),
    "zero rows after cleaning": Case(lambda p: rows(p, [("", "pos"), ("  ", "neg")]),
                                     _step("clean"), "zero rows left after cleaning", 3,
                                     first=("ingest",), untouched="data/clean/toy"),
    "label outside set": Case(lambda p: rows(p, make_rows(10) + [("odd one", "meh")]),
                              _step("clean"), "row 11: label 'meh' is not in labels", 3,
                              first=("ingest",), untouched="data/clean/toy"),
    "single class": Case(lambda p: rows(p, [(t, "pos") for t, _ in make_rows(20)]),
                         _step("clean"), "only one class ('pos')", 3, first=("ingest",)),
    "label map that maps nothing": Case(lambda p: dataset_yaml(p, "label_map: {0: neg, 1: pos}"),
                                        _step("clean"), "label_map keys ['0', '1'] match no "
                                        "label in the data", 3, first=("ingest",)),
    # ----- the configuration
    "unknown key": Case(lambda p: dataset_yaml(p, "colour: blue"), _step("ingest"),
                        "toy.yaml: colour: unknown key", 2, untouched="data/raw/toy"),
    "misspelt method option": Case(lambda p: dataset_yaml(p, "train: {methd: lora}"),
                                   _step("ingest"), "train.methd: unknown key", 2),
    "negative split": Case(lambda p: dataset_yaml(p, "clean: {split: {train: -0.1, val: 0.6, "
                                                     "test: 0.5}}"),
                           _step("ingest"), "clean.split.train: Input should be", 2),
    "split not summing to 1": Case(lambda p: dataset_yaml(
        p, "clean: {split: {train: 0.7, val: 0.2, test: 0.2}}"), _step("ingest"),
        "split fractions must sum to 1", 2),
    "not YAML": Case(lambda p: dataset_yaml(p, "train: [unclosed"), _step("ingest"),
                     "toy.yaml: not valid YAML", 2),
    "duplicate labels": Case(lambda p: replace_yaml(p, "labels: [neg, pos]", "labels: [neg, neg]"),
                             _step("ingest"), "labels: names must be unique", 2),
    "bad --set value": Case(lambda p: None, _step("clean", "toy", "--set", "clean.split.test=-1"),
                            "--set: clean.split.test", 2),
    "bad --set syntax": Case(lambda p: None, _step("ingest", "toy", "--set", "train.lr"),
                             "--set 'train.lr': expected key=value", 2),
    "unknown dataset": Case(lambda p: None, _step("ingest", "nope"), "no such dataset 'nope'", 2),
    "unknown step": Case(lambda p: None, _step("frobnicate"), "unknown step 'frobnicate'", 2),
    "causal-lm without columns": Case(lambda p: dataset_yaml(p, "task: causal-lm\ncolumns: {}"),
                                      _step("ingest"), "task causal-lm needs columns.messages", 2),
    # ----- the base model and the machine: before any step runs
    "missing base model": Case(lambda p: None,
                               _step("ingest", "toy", "--set", "model.base=./no/such/model"),
                               "model './no/such/model': no such directory", 5,
                               untouched="data/raw/toy"),
    "image base for text": Case(lambda p: None,
                                _step("ingest", "toy", "--set", "model.base=TINY_RESNET"),
                                "is an image model (resnet), not a text model", 2,
                                untouched="data/raw/toy"),
    "encoder base for causal-lm": Case(
        lambda p: dataset_yaml(p, "task: causal-lm\ncolumns: {prompt: text, response: label}"),
        _step("ingest"), "is a BertForSequenceClassification (bert), not a causal language model",
        2, untouched="data/raw/toy"),
    "pickle-only weights": Case(lambda p: None,
                                _step("ingest", "toy", "--set", "model.base=PICKLE_MODEL"),
                                "has only pickle weights", 5, untouched="data/raw/toy"),
    "QLoRA without CUDA": Case(lambda p: None,
                               _step("ingest", "toy", "--set", "train.method=qlora"),
                               "train.method=qlora needs a CUDA GPU", 5,
                               untouched="data/raw/toy"),
    "LoRA on a CNN": Case(lambda p: images(p), _step("ingest", "imgs", "--set",
                                                     "train.method=lora"),
                          "resnet has no attention layers", 2, untouched="data/raw/imgs"),
    # ----- causal-LM data
    "conversation without an assistant turn": Case(
        lambda p: chat(p, [{"messages": [{"role": "user", "content": f"hi {i}"}]}
                           for i in range(8)]),
        _step("clean", "chat"), "zero rows left after cleaning (8 in; no_assistant_turn=8)", 3,
        first=("ingest",)),
    "unknown role": Case(
        lambda p: chat(p, [{"messages": [{"role": "robot", "content": "beep"},
                                         {"role": "assistant", "content": "boop"}]}] * 3),
        _step("clean", "chat"), "unknown_role=3", 3, first=("ingest",)),
    "no chat column": Case(lambda p: write(p, "a,b\nx,y\n", "plain.csv"),
                           ("dataset", "add", "plain", "--source", "data/plain.csv", "--task",
                            "causal-lm"), "no chat column (messages, conversations)", 2),
    "truncated share over the bound": Case(lambda p: chat(p, [turn(i) for i in range(12)], 8),
                                           _step("validate", "chat"),
                                           "tokens: expect_column_values_to_be_in_set(truncated)",
                                           4, first=("ingest", "clean")),
    # ----- images
    "missing image folder": Case(lambda p: (images(p), __import__("shutil").rmtree(
        p / "data" / "imgs")), _step("ingest", "imgs"), "source.path: not found", 3),
    "undecodable images": Case(lambda p: images(p, n=4, broken=4), _step("validate", "imgs"),
                               "decodable", 4, first=("ingest", "clean")),
    "a folder with one class": Case(lambda p: images(p, classes=("only",)),
                                    ("dataset", "add", "one", "--source", "data/imgs", "--task",
                                     "image-classification"),
                                    "the class folders has only ['only'] as labels", 3),
    # ----- validation
    "too few rows": Case(lambda p: replace_yaml(p, "min_rows: 10", "min_rows: 5000"),
                         _step("validate"), "expect_table_row_count_to_be_between", 4,
                         first=("ingest", "clean")),
    # ----- dataset add
    "dataset exists": Case(lambda p: None, ("dataset", "add", "toy", "--source", "data/toy.csv",
                                            "--text-col", "text", "--label-col", "label"),
                           "already exists (use --force to overwrite)", 2),
    "bad dataset name": Case(lambda p: None, ("dataset", "add", "Bad Name", "--source",
                                              "data/toy.csv", "--text-col", "text",
                                              "--label-col", "label"),
                             "use lowercase letters, digits", 2),
    "add with a missing column": Case(lambda p: None, ("dataset", "add", "other", "--source",
                                                       "data/toy.csv", "--text-col", "body",
                                                       "--label-col", "label"),
                                      "column 'body' not found", 3,
                                      untouched="datasets/other.yaml"),
    "add with a URL": Case(lambda p: None, ("dataset", "add", "web", "--source",
                                            "https://example.com/x.csv", "--text-col", "t",
                                            "--label-col", "l"), "download it once", 2),
    "unknown task type": Case(lambda p: None, ("dataset", "add", "x", "--source", "data/toy.csv",
                                               "--task", "regression"),
                              "--task 'regression': choose one of", 2),
    # ----- predict
    "no champion yet": Case(lambda p: None, ("predict", "-d", "toy", "hello"),
                            "has no version with alias 'champion'", 5),
    "predict input file missing": Case(lambda p: None, ("predict", "-d", "toy", "--input",
                                                        "nope.csv"), "nope.csv: file not found",
                                       3),
    "predict input without the text column": Case(
        lambda p: write(p, "message\nhello\n", "in.csv"),
        ("predict", "-d", "toy", "--input", "data/in.csv"), "no text column", 3),
    "predict image not found": Case(lambda p: images(p), ("predict", "-d", "imgs", "nope.png"),
                                    "image file not found", 3),
}
# Rows whose door is tested with that door's own machinery.
ELSEWHERE = {
    "bad config through dvc repro": "tests/test_dvc_repro.py::"
                                    "test_a_bad_config_fails_at_the_first_stage_in_one_line",
    "moved source through dvc repro": "tests/test_dvc_repro.py::"
                                      "test_a_moved_source_asks_for_dvc_yaml",
    "unknown dataset through run": "tests/test_cli_entry.py::"
                                   "test_run_starts_and_stops_its_own_prefect_api",
    "QLoRA without CUDA through run": "tests/test_cli_entry.py::"
                                      "test_run_refuses_what_preflight_knows_before_the_flow",
    "bad override through the flow": "tests/test_flow.py::test_bad_override_fails_before_any_task",
    "failed validation through the flow": "tests/test_flow.py::"
                                          "test_flow_stops_at_validate_and_registers_nothing",
    "dataset add whose check fails": "tests/test_datasets_cli.py::"
                                     "test_a_failed_add_leaves_nothing_behind",
    "a number out of its range (every numeric setting)":
        "tests/test_bad_input.py::test_every_numeric_setting_is_checked_for_its_range",
    "a number out of its range through run or tune":
        "tests/test_bad_input.py::test_a_setting_out_of_range_stops_run_and_tune_in_one_line",
}


@pytest.fixture
def pickle_model(tmp_path: Path, tiny_bert: Path) -> Path:
    """The tiny BERT with its weights as a pickle (pytorch_model.bin) only."""
    import shutil

    import torch
    from safetensors.torch import load_file

    out = tmp_path / "pickled"
    shutil.copytree(tiny_bert, out)
    weights = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    torch.save(weights, out / "pytorch_model.bin")
    return out


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line(case, project, monkeypatch, capsys, request):
    spec = CASES[case]
    names = {"TINY_LLAMA": "tiny_llama", "TINY_RESNET": "tiny_resnet",
             "PICKLE_MODEL": "pickle_model"}
    spec.setup(project)
    args = list(spec.args)
    for placeholder, fixture in names.items():  # only build the models a row needs
        uses = [p for p in (*project.glob("datasets/*.yaml"),) if placeholder in p.read_text()]
        if placeholder in " ".join(args) or uses:
            value = str(request.getfixturevalue(fixture))
            args = [a.replace(placeholder, value) for a in args]
            for path in uses:
                path.write_text(path.read_text().replace(placeholder, value))
    source = project / "data" / "toy.csv"
    before = _digest(source)
    for step in spec.first:
        done = run_cli([*args[:1], step, *args[2:]], project, monkeypatch, capsys)
        assert done.code == 0, (step, done.err)
    result = run_cli(args, project, monkeypatch, capsys)
    assert result.code == spec.code, (result.code, result.err)
    errors = [line for line in result.err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert spec.needle in errors[0], errors[0]
    assert "Traceback" not in result.err + result.out
    assert _digest(source) == before  # the source is never modified
    if spec.untouched:
        assert not (project / spec.untouched).exists(), spec.untouched
    if (project / "mlflow.db").is_file():  # a step that failed ran in a FAILED run: fine
        from mlflow import MlflowClient

        uri = f"sqlite:///{project / 'mlflow.db'}"
        assert MlflowClient(uri, uri).search_model_versions() == []  # nothing registered


def test_the_documented_table_is_the_tested_one():
    """docs/bad-input.md lists exactly CASES and ELSEWHERE, with the same exit codes."""
    documented = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("input", "---"):
            documented[cells[0]] = cells
    assert set(documented) == set(CASES) | set(ELSEWHERE)
    for key, case in CASES.items():
        assert documented[key][4] == str(case.code), key
    for _name, test in ELSEWHERE.items():
        file, func = test.split("::")
        assert re.search(rf"def {func}\(", (REPO / file).read_text()), test
    assert len(documented) >= 40
    # The faults table names its tests as test_FILE.py::test_NAME: each exists.
    faults = re.findall(r"`(test_\w+\.py)::(test_\w+)`", DOC.read_text())
    assert len(faults) >= 7
    for file, func in faults:
        assert re.search(rf"def {func}\(", (REPO / "tests" / file).read_text()), func


def _range_cases() -> list[tuple[str, str]]:
    """(key=value, the key named) for every range-checked training option at a bad value,
    and the pydantic-bounded sections' numbers."""
    from tunesmith.training.options import RANGES, LoraOptions, TrainOptions

    bad = {(0, None, True, True): -1, (1, None, True, True): 0, (0, None, False, True): 0,
           (0, 1, True, False): 1, (0, 1, False, True): 0}
    cases = []
    for name, bounds in RANGES.items():
        owner = "train." if hasattr(TrainOptions, name) or name in TrainOptions.__annotations__ \
            else "train.lora." if name in LoraOptions.__annotations__ else None
        if owner:
            cases.append((f"{owner}{name}={bad[bounds]}", f"{owner}{name}"))
    cases += [("train.max_steps=0", "train.max_steps"),
              ("train.stages=[{epochs: 0}]", "train.stages.0.epochs"),
              ("tokenize.max_length=4", "tokenize.max_length"),
              ("validate.min_rows=-1", "validate.min_rows"),
              ("register.margin=-0.1", "register.margin"),
              ("tune.trials=0", "tune.trials"), ("evaluate.batch_size=0", "evaluate.batch_size")]
    return cases


@pytest.mark.parametrize(("pair", "key"), _range_cases())
def test_every_numeric_setting_is_checked_for_its_range(pair, key, project, monkeypatch, capsys):
    """Before any step runs: one line naming the key and its range, exit 2, nothing written
    (a batch of 0 rows, a negative learning rate and 0 trials were accepted before)."""
    result = run_cli(["step", "train", "--dataset", "toy", "--set", pair], project,
                     monkeypatch, capsys)
    assert result.code == 2, (pair, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"--set: {key}: " in errors[0], (pair, result.err)
    assert re.search(r"must be|greater than|less than", errors[0]), errors[0]
    assert not (project / "data" / "raw").exists()


@pytest.mark.parametrize("door", ["run", "tune", "tune --trials"])
def test_a_setting_out_of_range_stops_run_and_tune_in_one_line(door, project):
    """Through the real command (`run` in-process would leave Prefect's log handlers on
    pytest's captured stream for the tests after it)."""
    from acceptance import cli

    args = {"run": ["run", "--dataset", "toy", "--set", "train.lr=-1"],
            "tune": ["tune", "--dataset", "toy", "--set", "train.batch_size=0"],
            "tune --trials": ["tune", "--dataset", "toy", "--trials", "0"]}[door]
    result = cli(project, *args, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "must be" in errors[0], result.stderr
    assert "best val" not in result.stdout  # tune printed a "best" value of zero trials before
    assert not (project / "data" / "raw").exists()
