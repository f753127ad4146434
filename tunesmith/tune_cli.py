"""`tunesmith tune --dataset NAME`: the search of tunesmith/tune.py from the command line.

Makes the splits the search reads (the real ingest, clean, validate and tokenize step
functions, skipped when current), opens a `NAME-tune` MLflow run as the trials' parent,
searches, and prints the best values as `--set` flags or writes them into
datasets/NAME.yaml (`--write`, keeping its comments).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ConfigError
from tunesmith.tune import TuneResult, TuneRuns, fmt_value, search, space_of

if TYPE_CHECKING:
    from tunesmith.config import Config

PREPARE = ("ingest", "clean", "validate", "tokenize")  # the steps tuning needs outputs of




def prepare(cfg: Config, echo: Any = print) -> None:
    """The outputs tuning reads (the tokenized splits), made by the real step functions
    unless they are current: a step is skipped when its cache key (tunesmith.fingerprint)
    matches the one recorded the last time tune made it, and its output is on disk."""
    import importlib

    from tunesmith.fingerprint import output_present, step_key

    record = cfg.dirs.state / "tune_prepared.json"
    done = json.loads(record.read_text()) if record.is_file() else {}
    for step in PREPARE:
        key = step_key(cfg, step)
        if key is not None and done.get(step) == key and output_present(cfg, step):
            continue
        echo(f"tune: running {step} for {cfg.name}")
        getattr(importlib.import_module(f"tunesmith.tasks.{step}"), step)(cfg)
        done[step] = step_key(cfg, step)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(done, indent=1), encoding="utf-8")


def write_best(cfg: Config, best: dict[str, Any]) -> Path:
    """Set the best values in datasets/NAME.yaml, keeping its comments and layout."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from tunesmith.config import DATASETS_DIR

    path = cfg.root / DATASETS_DIR / f"{cfg.name}.yaml"
    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text(encoding="utf-8")) or CommentedMap()
    for key, value in best.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = CommentedMap()
            node = node[part]
        node[leaf] = value
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    return path


def run_cli(dataset: str, overrides: list[str], trials: int | None, space: list[str],
            epochs: float | None, write: bool, echo: Any = print) -> TuneResult:
    """`tunesmith tune`: prepare the splits, search, print (or write) the best values."""
    from tunesmith.config import load_config
    from tunesmith.tracking import start_side_run

    if trials is not None and trials < 1:  # 0 trials still printed a "best" value
        raise ConfigError(f"--trials: must be >= 1, got {trials}")
    if epochs is not None and not epochs > 0:
        raise ConfigError(f"--epochs: must be > 0, got {epochs:g}")
    cfg = load_config(dataset, overrides=overrides)
    dims = space_of(cfg, space)  # a bad --space fails before any work
    prepare(cfg, echo)
    client, parent = start_side_run(cfg, f"{cfg.name}-tune", {"tunesmith.kind": "tune"})
    runs = TuneRuns(cfg.name, client, parent, owned=True)
    try:
        result = search(cfg, trials, dims, runs, epochs)
    except BaseException:
        runs.fail()
        raise
    better = "higher" if result.greater_is_better else "lower"
    pruned = sum(r["state"] == "pruned" for r in result.trials)
    echo(f"tune {cfg.name}: {len(result.trials)} trials ({pruned} pruned) in "
         f"{result.seconds:.0f}s on the train/val splits (test unused); MLflow run "
         f"{result.parent_run_id}")
    for row in result.trials:
        shown = " ".join(f"{d.key}={fmt_value(row[d.key])}" for d in dims)
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        echo(f"  trial {row['trial']}: {shown}  val {result.metric} {value} "
             f"({row['state']}, {row['seconds']:.0f}s)")
    echo(f"best val {result.metric} {result.value:.4f} ({better} is better): "
         + " ".join(f"{k}={fmt_value(v)}" for k, v in result.best.items()))
    if write:
        path = write_best(cfg, result.best)
        echo(f"wrote {', '.join(result.best)} into {path}")
    else:
        echo(f"use it: tunesmith run --dataset {cfg.name} " + " ".join(result.set_flags())
             + "   (or tunesmith tune ... --write)")
    return result
