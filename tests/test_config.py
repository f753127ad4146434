from pathlib import Path

import pytest
from conftest import REPO

from tunesmith.config import load_config, parse_overrides
from tunesmith.errors import ConfigError


def test_repo_config_loads_and_dataset_overrides_defaults():
    cfg = load_config("sms_spam", REPO)
    assert cfg.labels == ["ham", "spam"]
    assert cfg.clean.strip_html is True  # from datasets/sms_spam.yaml
    assert cfg.clean.max_chars == 5000  # from params.yaml
    assert cfg.dirs.clean == REPO / "data" / "clean" / "sms_spam"


def test_set_overrides_both(project: Path):
    cfg = load_config("toy", project, ["train.lr=0.25", "clean.split.seed=7"])
    assert cfg.train.lr == 0.25
    assert cfg.clean.split.seed == 7


@pytest.mark.parametrize(("extra", "needle"), [
    ("bogus: 1", "toy.yaml: bogus: unknown key"),
    ("train: {nope: 1}", "toy.yaml: train.nope: unknown key"),
    ("clean: {split: {train: -0.2, val: 0.6, test: 0.6}}", "toy.yaml: clean.split.train:"),
    ("clean: {split: {train: 0.5, val: 0.1, test: 0.1}}", "must sum to 1"),
    ("train: {lr: fast}", "toy.yaml: train.lr: Input should be a valid number"),
])
def test_bad_dataset_yaml_names_file_and_key(project: Path, extra: str, needle: str):
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text() + extra + "\n")
    with pytest.raises(ConfigError, match=None) as info:
        load_config("toy", project)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_params_names_params(project: Path):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("tokenize:\n", "tokenize:\n  speed: 3\n"))
    with pytest.raises(ConfigError, match=r"params.yaml: tokenize.speed: unknown key"):
        load_config("toy", project)


def test_bad_override_is_named():
    with pytest.raises(ConfigError, match=r"--set: train.batch_size"):
        load_config("sms_spam", REPO, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.lr"])


def test_label_map_keys_become_strings(project: Path):
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text() + "label_map: {0: neg, 1: pos}\n")
    assert load_config("toy", project).label_map == {"0": "neg", "1": "pos"}


def test_the_source_is_written_once_and_a_stale_dvc_yaml_is_one_line(project: Path):
    """datasets/NAME.yaml holds the source; dvc.yaml derives from it. Pointing the dataset at
    a new file without regenerating fails at the NAME-inputs stage, naming the fix."""
    from tunesmith import dvcfile

    dvcfile.write(project)
    dvcfile.resolve(load_config("toy", project))  # current: writes the inputs files
    assert (project / ".tunesmith" / "toy" / "inputs" / "train.json").is_file()
    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("data/toy.csv", "data/other.csv"))
    with pytest.raises(ConfigError, match=r"stage toy-ingest is out of date.*tunesmith dvc-yaml"):
        dvcfile.resolve(load_config("toy", project))
    dvcfile.write(project)
    dvcfile.resolve(load_config("toy", project))


def test_unset_lr_and_epochs_mean_the_methods_defaults_and_a_set_value_wins(project: Path):
    from tunesmith import steps
    from tunesmith.training.options import LR_DEFAULTS

    path = project / "datasets" / "toy.yaml"
    path.write_text(path.read_text().replace("epochs: 2, ", "").replace("lr: 5.0e-3, ", ""))
    rates = {}
    for method in ("full", "freeze", "head_only", "lora", "qlora", "scratch", "staged"):
        cfg = load_config("toy", project, [f"train.method={method}"])
        rates[method] = cfg.train.lr
        assert cfg.train.lr == LR_DEFAULTS["adamw"][method]
        # What the step cache keys and dvc.yaml's inputs files see: the resolved number.
        assert steps.resolved_reads(cfg, "train")["train"]["lr"] == cfg.train.lr
    assert rates["lora"] >= 10 * rates["full"] and rates["head_only"] > rates["lora"]
    assert load_config("toy", project, ["train.method=scratch"]).train.epochs == 10
    assert load_config("toy", project, ["train.method=lora"]).train.epochs == 3
    sgd = load_config("toy", project, ["train.optimizer=sgd"]).train
    assert sgd.lr == LR_DEFAULTS["sgd"]["full"]
    # A value the user sets always wins: the dataset YAML, then --set.
    path.write_text(path.read_text() + "train: {lr: 2.0e-5, epochs: 5, batch_size: 8}\n")
    pinned = load_config("toy", project, ["train.method=lora"]).train
    assert (pinned.lr, pinned.epochs) == (2e-5, 5)
    assert load_config("toy", project, ["train.lr=3e-4"]).train.lr == 3e-4
    assert load_config("toy", project, ["train.lr=auto"]).train.lr == "auto"


def test_task_types_override_the_rates_and_class_weights_need_classes(project: Path):
    chat = ["task=causal-lm", "columns={prompt: text, response: label}", "train.lr=null"]
    assert load_config("toy", project, [*chat, "train.method=lora"]).train.lr == 1e-3
    assert load_config("toy", project, [*chat, "train.method=freeze"]).train.lr == 2e-4
    assert load_config("toy", project, ["train.class_weights=balanced"]).train.class_weights \
        == "balanced"
    with pytest.raises(ConfigError, match="train.class_weights: balanced needs classes"):
        load_config("toy", project, [*chat, "train.class_weights=balanced"])
    with pytest.raises(ConfigError, match="--set: train.class_weights: Input should be"):
        load_config("toy", project, ["train.class_weights=inverse"])
