"""`tunesmith dataset add | list | check` as a data team runs them."""

from pathlib import Path

import yaml
from cli_helpers import run_cli
from conftest import make_rows, write_csv

from tunesmith.config import load_config
from tunesmith.datasets import dvc_entries


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
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["datasets"]["reviews"] == {"source": "data/reviews.csv"}
    assert "# Defaults for every dataset" in (project / "params.yaml").read_text()  # comments kept
    assert "60 rows in, 60 kept" in result.out
    assert "validation: passed" in result.out
    assert "splits: train 48, val 6, test 6" in result.out
    cfg = load_config("reviews", project)
    assert (cfg.dirs.validation / "result.json").is_file()

    listed = run_cli(["dataset", "list"], project, monkeypatch, capsys)
    assert "reviews" in listed.out and "toy" in listed.out


def test_add_lists_the_new_datasets_metrics_and_plots_in_dvc_yaml(project: Path, monkeypatch,
                                                                   capsys):
    from conftest import REPO

    (project / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    before = yaml.safe_load((REPO / "dvc.yaml").read_text())
    write_csv(project / "data" / "reviews.csv", make_rows(30))
    args = ["dataset", "add", "reviews", "--source", "data/reviews.csv", "--text-col", "text",
            "--label-col", "label", "--no-check"]
    assert run_cli(args, project, monkeypatch, capsys).code == 0
    assert run_cli([*args, "--force"], project, monkeypatch, capsys).code == 0  # no duplicates
    dvc = yaml.safe_load((project / "dvc.yaml").read_text())
    assert dvc["metrics"] == [*before["metrics"], "reports/reviews/eval/metrics.json"]
    plots = {next(iter(p)): next(iter(p.values())) for p in dvc["plots"]}
    assert plots["reports/reviews/eval/confusion.csv"] == {
        "template": "confusion", "x": "actual", "y": "predicted",
        "title": "reviews confusion matrix (test)"}
    assert plots["models/reviews/curve.csv"]["y"] == ["loss", "eval_loss"]
    assert len(plots) == len(before["plots"]) + 4 and "stages" in dvc


def test_add_refuses_to_overwrite_and_bad_columns(project: Path, monkeypatch, capsys):
    again = run_cli(["dataset", "add", "toy", "--source", "data/toy.csv", "--text-col", "text",
                     "--label-col", "label"], project, monkeypatch, capsys)
    assert again.code == 2 and "already exists" in again.err
    wrong = run_cli(["dataset", "add", "other", "--source", "data/toy.csv", "--text-col", "body",
                     "--label-col", "label"], project, monkeypatch, capsys)
    assert wrong.code == 3 and "column 'body' not found" in wrong.err
    assert not (project / "datasets" / "other.yaml").exists()


def test_check_reports_failed_expectations(project: Path, monkeypatch, capsys):
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("min_rows: 10", "min_rows: 5000"))
    result = run_cli(["dataset", "check", "toy"], project, monkeypatch, capsys)
    assert result.code == 4
    assert "FAILED" in result.out


def test_every_dataset_in_params_has_metrics_and_plots_in_dvc_yaml():
    """The repo's own dvc.yaml: a dataset added by hand to params.yaml must get its entries too
    (`tunesmith.datasets.dvc_entries` gives them)."""
    from conftest import REPO

    names = yaml.safe_load((REPO / "params.yaml").read_text())["datasets"]
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plots = {next(iter(p)) for p in dvc["plots"]}
    for name in names:
        assert f"reports/{name}/eval/metrics.json" in dvc["metrics"], name
        assert f"models/{name}/curve.csv" in plots, name
    for name in ("sms_spam", "shapes"):  # the bundled samples: exactly what dataset add writes
        assert all(block in (REPO / "dvc.yaml").read_text() for block in dvc_entries(name).values())


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
    assert added[0]["entrypoint"] == "flows.retrain:retrain"  # merged from the shared definition
    assert added[0]["work_pool"]["name"] == "tunesmith-process"
