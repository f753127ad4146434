"""`tunesmith predict` serves the registry's champion offline (real MLflow, SQLite)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import REPO, write_dataset_yaml
from registry_helpers import (
    one_torch_thread,  # noqa: F401 (a fixture, used by name)
    run_pipeline,
    toy_config,
)
from typer.testing import CliRunner

from tunesmith.cli_registry import registry_app
from tunesmith.errors import DataError, EnvironmentProblem
from tunesmith.registry import store


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_bert, one_torch_thread):  # noqa: F811
    """A project whose `toy` model has a champion (version 1), built once for the module
    (one train+evaluate+register is most of these tests' time); cwd is the project root."""
    root = tmp_path_factory.mktemp("served") / "proj"
    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "toy.csv").write_text("text,label\n")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    write_dataset_yaml(root, "toy", base=str(tiny_bert))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        cfg = toy_config(root)
        results = run_pipeline(cfg)
        evaluation, registration = results["evaluate"], results["register"]
        assert registration.aliases == ["challenger", "champion"]
        yield cfg, evaluation


def invoke(*args: str):
    return CliRunner().invoke(registry_app, list(args), catch_exceptions=True)


def test_predict_texts_and_files_with_the_champion(served, tmp_path) -> None:
    cfg, evaluation = served
    result = invoke("predict", "--dataset", "toy", "the film was superb", "dull and boring")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [line[2] for line in lines] == ["the film was superb", "dull and boring"]
    # The toy label is the sentiment word: a champion that learnt it gets both right.
    assert [line[0] for line in lines] == ["pos", "neg"]

    # A CSV of the test split in, JSONL out: same labels as evaluate measured.
    test = pd.read_parquet(cfg.dirs.clean / "test.parquet")
    test.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out" / "pred.jsonl"
    result = invoke("predict", "-d", "toy", "--input", str(tmp_path / "in.csv"), "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(test) and set(rows[0]) == {"text", "label", "score"}
    accuracy = sum(r["label"] == t for r, t in zip(rows, test["label"], strict=True)) / len(rows)
    assert accuracy == pytest.approx(evaluation.metrics["accuracy"])


def test_served_model_batches_by_length_but_keeps_row_order(served) -> None:
    """The pyfunc sorts texts by length into batches; each row must stay its own text's."""
    cfg, _ = served
    model = store.load_pyfunc(cfg, store.CHAMPION)
    texts = ["dull " * 30 + "boring", "superb", "the film was superb and moving", "dull",
             "a moving, superb film " * 6, "boring"]
    together = model.predict(pd.DataFrame({"text": texts}))
    one_by_one = pd.concat([model.predict(pd.DataFrame({"text": [t]})) for t in texts])
    probs = [c for c in together.columns if c.startswith("prob_")]
    error = abs(together[probs].to_numpy() - one_by_one[probs].to_numpy()).max()
    spread = abs(one_by_one[probs].to_numpy() - one_by_one[probs].to_numpy()[::-1]).max()
    assert spread > 100 * max(error, 1e-7), (spread, error)  # a mix-up would show
    assert together["label"].tolist() == one_by_one["label"].tolist()


def test_predict_follows_the_alias(served, tmp_path) -> None:
    cfg, _ = served
    assert invoke("predict", "-d", "toy", "--alias", "challenger", "fun").exit_code == 0
    result = invoke("predict", "-d", "toy", "--alias", "nope", "fun")
    assert isinstance(result.exception, EnvironmentProblem)
    assert "no version with alias 'nope'" in str(result.exception)
    (tmp_path / "bad.csv").write_text("message\nhello\n")
    result = invoke("predict", "-d", "toy", "--input", str(tmp_path / "bad.csv"))
    assert isinstance(result.exception, DataError) and "no text column" in str(result.exception)
    assert invoke("predict", "-d", "toy").exit_code != 0  # neither texts nor --input


def test_promote_and_rollback_commands(served) -> None:
    cfg, _ = served
    result = invoke("promote", "--dataset", "toy", "--version", "1", "--note", "same again")
    assert result.exit_code == 0 and "champion -> version 1 (was 1)" in result.stdout
    result = invoke("rollback", "--dataset", "toy", "--version", "7")
    assert isinstance(result.exception, EnvironmentProblem)
    assert int(store.version_for(cfg, "champion").version) == 1
