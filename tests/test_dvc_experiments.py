"""DVC parity and experiments in a temporary git repository, with real DVC, MLflow, Prefect.

- `dvc repro` and `tunesmith run` on the same data and params give the same metrics.json,
  and each makes one MLflow run that every step wrote to;
- `dvc exp run -S train.lr=...` re-runs only train/evaluate/register, and `dvc exp show`,
  `dvc metrics diff`, `dvc plots diff` show the comparison;
- appending rows to the source is a new data version: all stages re-run, a new model
  version is registered, and each version records the data it came from;
- `dvc push` / `dvc pull` work against the default local remote.

Slow (a full pipeline per scenario, each stage its own process): run with `-m slow`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import make_rows, write_csv
from dvc_helpers import STEPS, make_dvc_repo, ran, sh, stages

NOT_QUALITY = re.compile(r"^(latency_|model_size_mb$)")  # timings and on-disk size vary

# No train.lr here: `dvc exp run -S train.lr=...` edits params.yaml, which a dataset YAML
# overrides (see the README's note on -S).
TOY_YAML = """source: {{path: data/toy.csv}}
columns: {{text: text, label: label}}
labels: [neg, pos]
validate: {{min_rows: 10, min_class_share: 0.2, max_label_drift: 0.3}}
model: {{base: {base}}}
tokenize: {{max_length: 32}}
evaluate: {{latency_examples: 2}}
register: {{require_beat_baseline: false, baseline_can_win: false}}
"""


def _shrunk(params: str) -> str:
    """Shrunk training through params.yaml itself, the file `dvc exp run -S` edits."""
    params = (params.replace("  epochs: null\n", "  epochs: 4\n")  # null: the method's
              .replace("  lr: null\n", "  lr: 5.0e-3\n")
              .replace("  batch_size: 32\n", "  batch_size: 8\n"))
    assert "  epochs: 4\n" in params and "  lr: 5.0e-3\n" in params
    return params


def make_repo(repo: Path, tiny_bert: Path) -> Path:
    """The project's params.yaml (training shrunk), .dvc/config and code, one tiny dataset."""
    return make_dvc_repo(repo, {"toy": TOY_YAML.format(base=tiny_bert)},
                         {"toy": lambda path: write_csv(path, make_rows(60))}, _shrunk)


def quality(path: Path) -> dict:
    """metrics.json flattened ("baseline.per_class.neg.f1"), without the fields that measure
    time or disk rather than the model."""
    def flat(tree, prefix=""):
        if isinstance(tree, dict):
            items = tree.items()
        elif isinstance(tree, list):
            items = enumerate(tree)
        else:
            return {prefix.rstrip("."): tree}
        return {k: v for key, sub in items for k, v in flat(sub, f"{prefix}{key}.").items()}

    return {k: v for k, v in flat(json.loads(path.read_text())).items() if not NOT_QUALITY.match(k)}


def mlflow_client(repo: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def pipeline_runs(repo: Path) -> list:
    client = mlflow_client(repo)
    exp = client.get_experiment_by_name("toy")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def assert_one_full_run(repo: Path) -> None:
    """One FINISHED run that every step wrote to, with data inputs and a registered model."""
    runs = pipeline_runs(repo)
    assert len(runs) == 1, [r.info.status for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {f"step.{s}": "done" for s in STEPS}.items() <= run.data.tags.items()
    for key in ("data/raw_rows", "clean/rows_out", "validate/n_failed",
                "tokenize/truncated_share", "train/wall_time_s", "test/f1_macro"):
        assert key in run.data.metrics, key
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"toy-train", "toy-val",
                                                                   "toy-test"}
    assert run.data.tags["registered.version"] == "1"


@pytest.mark.slow
def test_dvc_repro_and_tunesmith_run_give_the_same_model(tmp_path: Path, tiny_bert: Path):
    via_dvc = make_repo(tmp_path / "dvc", tiny_bert)
    via_cli = make_repo(tmp_path / "cli", tiny_bert)

    assert ran(sh(["dvc", "repro"], via_dvc)) == stages("toy", ("inputs", *STEPS))
    out = sh(["tunesmith", "run", "--dataset", "toy"], via_cli)
    assert "toy: completed; ran ingest, clean, validate, tokenize, train, evaluate, register" in out

    metrics = "reports/toy/eval/metrics.json"
    dvc_metrics, cli_metrics = quality(via_dvc / metrics), quality(via_cli / metrics)
    assert dvc_metrics == pytest.approx(cli_metrics, abs=1e-6)
    # Probabilities, not just labels, must agree: a 6-row test split has few distinct labels.
    assert {"f1_macro", "roc_auc", "ece", "baseline.f1_macro"} <= set(dvc_metrics)
    for same in ("data/clean/toy/report.json", "data/tokenized/toy/meta.json",
                 "reports/toy/eval/confusion.csv", "reports/toy/eval/roc.csv"):
        assert (via_dvc / same).read_bytes() == (via_cli / same).read_bytes(), same
    assert_one_full_run(via_dvc)
    assert_one_full_run(via_cli)


def _version_data(repo: Path, version: int) -> dict[str, str]:
    tags = mlflow_client(repo).get_model_version("toy", str(version)).tags
    return {k: v for k, v in tags.items() if k.startswith(("data.", "dvc."))}


def _run_inputs(repo: Path, version: int) -> dict[str, str]:
    client = mlflow_client(repo)
    run_id = client.get_model_version("toy", str(version)).run_id
    return {d.dataset.name.removeprefix("toy-"): d.dataset.digest
            for d in client.get_run(run_id).inputs.dataset_inputs}


@pytest.mark.slow
def test_experiments_new_data_and_the_local_remote(tmp_path: Path, tiny_bert: Path):
    repo = make_repo(tmp_path / "repo", tiny_bert)
    sh(["dvc", "repro"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "baseline"], repo)

    # An experiment on one param re-runs only what depends on it.
    out = sh(["dvc", "exp", "run", "-n", "low-lr", "-S", "train.lr=0.0001"], repo)
    # The inputs stage re-resolves params; only the steps that read train.lr re-run.
    assert ran(out) == stages("toy", ("inputs", "train", "evaluate", "register"))
    show = sh(["dvc", "exp", "show", "--csv"], repo)
    header, *rows = list(csv.reader(show.strip().splitlines()))
    assert "train.lr" in header and "f1_macro" in header
    low = next(r for r in rows if r[header.index("Experiment")] == "low-lr")
    assert float(low[header.index("train.lr")]) == 0.0001
    diff = json.loads(sh(["dvc", "metrics", "diff", "--json"], repo))
    changed = diff["reports/toy/eval/metrics.json"]
    assert {"ece", "roc_auc"} & set(changed)  # continuous scores move with a 50x lower lr
    plots = json.loads(sh(["dvc", "plots", "diff", "HEAD", "--json"], repo))
    roc = plots["data"]["reports/toy/eval/roc.csv"][0]
    assert set(roc["revisions"]) == {"HEAD", "workspace"}
    assert {"models/toy/curve.csv", "reports/toy/eval/confusion.csv"} <= set(plots["data"])

    # New rows are a new data version: everything re-runs and a new version is registered.
    with (repo / "data" / "toy.csv").open("a", newline="") as fh:
        csv.writer(fh).writerows(make_rows(90, seed=7)[60:])
    assert ran(sh(["dvc", "repro"], repo)) == stages("toy")
    v1, v2, v3 = (_version_data(repo, v) for v in (1, 2, 3))
    assert v1 == v2  # the experiment changed lr, not data
    new_sha = hashlib.sha256((repo / "data" / "toy.csv").read_bytes()).hexdigest()
    assert v3["data.raw_sha256"] == new_sha != v1["data.raw_sha256"]
    assert v3["dvc.ingest.data/raw/toy"] != v1["dvc.ingest.data/raw/toy"]
    for split in ("train", "val", "test"):
        assert v3[f"data.{split}.digest"] != v1[f"data.{split}.digest"]
    for version, tags in ((1, v1), (3, v3)):  # what the version says == what its run logged
        inputs = _run_inputs(repo, version)
        assert inputs == {s: tags[f"data.{s}.digest"][:32] for s in ("train", "val", "test")}
    assert [r.info.status for r in pipeline_runs(repo)] == ["FINISHED"] * 3

    # The default remote is the local folder; push, lose the cache and outputs, pull back.
    remotes = sh(["dvc", "remote", "list"], repo)
    assert re.search(r"^local\s+\S*dvc-remote\s+\(default\)", remotes, re.M), remotes
    sh(["dvc", "remote", "modify", "local", "url", str(tmp_path / "remote")], repo)
    assert "pushed" in sh(["dvc", "push"], repo)
    before = (repo / "reports/toy/eval/metrics.json").read_bytes()
    for lost in (".dvc/cache", "data/raw", "data/clean", "data/tokenized", "models", "reports"):
        shutil.rmtree(repo / lost)
    assert re.search(r"\d+ files? (fetched|added)", sh(["dvc", "pull"], repo))
    assert (repo / "reports/toy/eval/metrics.json").read_bytes() == before
    assert "up to date" in sh(["dvc", "status"], repo)
