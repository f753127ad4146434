"""`tunesmith dataset add | list | check` as a data team runs them."""

from pathlib import Path

import yaml
from cli_helpers import run_cli
from conftest import make_rows, write_csv

from tunesmith.config import load_config
from tunesmith.dvcfile import generate, render


def test_add_infers_labels_registers_for_dvc_and_checks(project: Path, monkeypatch, capsys):
    rows = [(t, "1" if lab == "pos" else "0") for t, lab in make_rows(60)]
    write_csv(project / "data" / "reviews.csv", rows, header=("review", "stars"))
    result = run_cli(["dataset", "add", "reviews", "--source", "data/reviews.csv",
                      "--text-col", "review", "--label-col", "stars",
                      "--label-map", "0=bad", "--label-map", "1=good"],
                     project, monkeypatch, capsys)
    assert result.code == 0, result.err
    spec = yaml.safe_load((project / "datasets" / "reviews.yaml").read_text())
    assert spec["labels"] == ["bad", "good"]
    assert spec["label_map"] == {"0": "bad", "1": "good"}
    assert "60 rows in, 60 kept" in result.out
    assert "validation: passed" in result.out
    assert "splits: train 48, val 6, test 6" in result.out
    cfg = load_config("reviews", project)
    assert (cfg.dirs.validation / "result.json").is_file()

    listed = run_cli(["dataset", "list"], project, monkeypatch, capsys)
    assert "reviews" in listed.out and "toy" in listed.out


def test_add_regenerates_dvc_yaml_with_the_new_dataset(project: Path, monkeypatch, capsys):
    from conftest import REPO

    (project / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    write_csv(project / "data" / "reviews.csv", make_rows(30))
    args = ["dataset", "add", "reviews", "--source", "data/reviews.csv", "--text-col", "text",
            "--label-col", "label", "--no-check"]
    assert run_cli(args, project, monkeypatch, capsys).code == 0
    assert run_cli([*args, "--force"], project, monkeypatch, capsys).code == 0  # no duplicates
    text = (project / "dvc.yaml").read_text()
    assert text == render(generate(project))  # the project's datasets only, not the repo's
    dvc = yaml.safe_load(text)
    assert dvc["metrics"] == ["reports/reviews/eval/metrics.json", "reports/toy/eval/metrics.json"]
    assert "data/reviews.csv" in dvc["stages"]["reviews-ingest"]["deps"]
    assert dvc["stages"]["reviews-train"]["outs"] == ["models/reviews"]
    plots = {next(iter(p)): next(iter(p.values())) for p in dvc["plots"]}
    assert plots["reports/reviews/eval/confusion.csv"] == {
        "template": "confusion", "x": "actual", "y": "predicted",
        "title": "reviews confusion matrix (test)"}
    assert plots["models/reviews/curve.csv"]["y"] == ["loss", "eval_loss"]
    assert len(plots) == 8


def test_add_refuses_to_overwrite_and_bad_columns(project: Path, monkeypatch, capsys):
    again = run_cli(["dataset", "add", "toy", "--source", "data/toy.csv", "--text-col", "text",
                     "--label-col", "label"], project, monkeypatch, capsys)
    assert again.code == 2 and "already exists" in again.err
    wrong = run_cli(["dataset", "add", "other", "--source", "data/toy.csv", "--text-col", "body",
                     "--label-col", "label"], project, monkeypatch, capsys)
    assert wrong.code == 3 and "column 'body' not found" in wrong.err
    assert not (project / "datasets" / "other.yaml").exists()


def test_a_failed_add_leaves_nothing_behind(project: Path, monkeypatch, capsys):
    """A dataset whose check fails is not half added: no YAML, dvc.yaml and prefect.yaml as
    they were, so the corrected retry works without --force."""
    from conftest import REPO

    for name in ("dvc.yaml", "prefect.yaml"):
        (project / name).write_text((REPO / name).read_text())
    before = {n: (project / n).read_text() for n in ("dvc.yaml", "prefect.yaml")}
    write_csv(project / "data" / "few.csv", make_rows(12))  # passes clean, fails min_rows 20
    args = ["dataset", "add", "few", "--source", "data/few.csv", "--text-col", "text",
            "--label-col", "label"]
    failed = run_cli(args, project, monkeypatch, capsys)
    assert failed.code == 4 and "FAILED" in failed.out
    # the refusal names the option that accepts this data (and only the failed bound's)
    assert failed.out.strip().splitlines()[-1].endswith(
        "rerun the same command with --set validate.min_rows=... (now 20)")
    assert not (project / "datasets" / "few.yaml").exists()
    assert {n: (project / n).read_text() for n in before} == before
    accepted = run_cli([*args, "--set", "validate.min_rows=10", "--set", "train.epochs=1"],
                       project, monkeypatch, capsys)
    assert accepted.code == 0, accepted.out  # the option it named, no --force needed
    spec = yaml.safe_load((project / "datasets" / "few.yaml").read_text())
    assert spec["validate"] == {"min_rows": 10} and spec["train"] == {"epochs": 1}
    (project / "datasets" / "few.yaml").unlink()
    write_csv(project / "data" / "few.csv", make_rows(40))
    assert run_cli(args, project, monkeypatch, capsys).code == 0  # the retry, no --force
    assert (project / "datasets" / "few.yaml").is_file()
    assert "few-ingest" in (project / "dvc.yaml").read_text()


def test_check_works_on_every_shipped_dataset(tmp_path: Path, monkeypatch, capsys):
    """The repo's own datasets (text and images), checked in a copy of the project."""
    import shutil

    from conftest import REPO

    from tunesmith.config import dataset_names

    root = tmp_path / "proj"
    shutil.copytree(REPO / "datasets", root / "datasets")
    shutil.copytree(REPO / "data" / "samples", root / "data" / "samples")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    lines = {"text-classification": "text length (chars)", "causal-lm": "prompt length",
             "image-classification": "decodable: "}
    names = dataset_names(REPO)
    assert {"sms_spam", "shapes"} <= set(names)
    for name in names:
        result = run_cli(["dataset", "check", name], root, monkeypatch, capsys)
        assert result.code == 0, (name, result.err)
        assert lines[load_config(name, root).task] in result.out, result.out
        assert "validation: passed" in result.out


def test_check_reports_failed_expectations(project: Path, monkeypatch, capsys):
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("min_rows: 10", "min_rows: 5000"))
    result = run_cli(["dataset", "check", "toy"], project, monkeypatch, capsys)
    assert result.code == 4
    assert "FAILED" in result.out


def test_the_committed_dvc_yaml_is_what_the_declarations_generate():
    """dvc.yaml derives from datasets/*.yaml and each step's declaration: a changed
    declaration, import or dataset without `tunesmith dvc-yaml` fails here."""
    from conftest import REPO

    assert (REPO / "dvc.yaml").read_text() == render(generate(REPO)), (
        "dvc.yaml is stale: run `tunesmith dvc-yaml` and commit it")


def test_add_schedules_the_new_dataset_in_prefect_yaml(project: Path, monkeypatch, capsys):
    from conftest import REPO

    (project / "prefect.yaml").write_text((REPO / "prefect.yaml").read_text())
    write_csv(project / "data" / "reviews.csv", make_rows(30))
    args = ["dataset", "add", "reviews", "--source", "data/reviews.csv", "--text-col", "text",
            "--label-col", "label", "--no-check"]
    assert run_cli(args, project, monkeypatch, capsys).code == 0
    assert run_cli([*args, "--force"], project, monkeypatch, capsys).code == 0  # no duplicates
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    added = [d for d in spec["deployments"] if d["name"] == "retrain-reviews"]
    assert len(added) == 1
    assert added[0]["parameters"] == {"dataset": "reviews"}
    assert added[0]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    # merged from the shared definition
    assert added[0]["entrypoint"] == "tunesmith.flows.retrain:retrain"
    assert added[0]["work_pool"]["name"] == "tunesmith-process"
