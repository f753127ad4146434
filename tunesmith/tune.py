"""Hyper-parameters chosen on the validation split: `tunesmith tune` and `train.lr: auto`.

An Optuna study (TPE sampler seeded by `train.seed`, median pruner) over a space of `train.*`
keys, by default the learning rate log-uniform over [default / 10, default * 10] around the
method's rate. Each trial is a short run of the real training core (`tune.epochs` epochs)
on the train split, scored on the val split after every epoch: the pruner stops a trial
whose val metric is below the median of earlier trials at the same epoch. The objective
is the val metric the train step picks checkpoints by (`train.metric_for_best`; the loss
for a causal LM). The test split is never read: training reads only tokenized/train and
tokenized/val (tests/test_tune.py deletes the test split and tunes).

Every trial is an MLflow child run of one parent (`TuneRuns`): a `NAME-tune` run for
`tunesmith tune` (tunesmith/tune_cli.py), the pipeline's own run for `train.lr: auto`. This
module is what the train step runs for `auto`, so it imports no project module beyond the
train step's own (the CLI side, which prepares data and edits YAML, is tune_cli.py).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tunesmith.config import Config

# ------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Dim:
    """One searched key: a float or int range (log or linear), or a list of choices."""

    key: str  # "train.lr", "train.lora.r", ...
    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def spec(self) -> str:
        if self.kind == "choice":
            return ",".join(map(str, self.choices))
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


def parse_dim(key: str, spec: str) -> Dim:
    """`train.lr`, `1e-5:1e-3:log` -> Dim; `4:16` ints; `a,b` choices; one-line errors."""
    key = key.strip()
    if not key.startswith("train.") or key in ("train.method",):
        raise ConfigError(f"--space {key}: only training options (train.*, not the method) "
                          "can be tuned")
    text = str(spec).strip()
    if ":" in text:
        parts = text.split(":")
        log = parts[-1] == "log"
        bounds = parts[:-1] if log else parts
        if len(bounds) != 2:
            raise ConfigError(f"--space {key}={text}: expected low:high or low:high:log")
        try:
            low, high = (float(b) for b in bounds)
        except ValueError:
            raise ConfigError(f"--space {key}={text}: bounds must be numbers") from None
        if not low < high or (log and low <= 0):
            raise ConfigError(f"--space {key}={text}: needs low < high (and low > 0 for log)")
        ints = all(b.strip().lstrip("-").isdigit() for b in bounds)
        return Dim(key, "int" if ints else "float", low, high, log)
    import yaml

    choices = tuple(yaml.safe_load(c) for c in text.split(",") if c.strip())
    if len(choices) < 2:
        raise ConfigError(f"--space {key}={text}: expected low:high[:log] or a,b[,c...]")
    return Dim(key, "choice", choices=choices)


def parse_space(pairs: list[str] | dict[str, str]) -> list[Dim]:
    items = pairs.items() if isinstance(pairs, dict) else (p.partition("=")[::2] for p in pairs)
    return [parse_dim(k, v) for k, v in items]


def space_of(cfg: Config, extra: list[str] | None = None) -> list[Dim]:
    """`tune.space` with the `--space` flags on top, or the default learning-rate range."""
    from tunesmith import objectives
    from tunesmith.training.options import default_lr

    dims = {d.key: d for d in parse_space(dict(cfg.tune.space))}
    dims.update({d.key: d for d in parse_space(extra or [])})
    if not dims:
        t = cfg.train
        rate = default_lr(t.method, t.optimizer, objectives.get(cfg.task).LR_DEFAULTS)
        dims["train.lr"] = Dim("train.lr", "float", rate / 10, rate * 10, log=True)
    return list(dims.values())


def apply(options: Any, values: dict[str, Any]) -> Any:
    """A copy of TrainOptions `options` with `{"train.lr": 1e-4, "train.lora.r": 16}` set."""
    out = dataclasses.replace(options)
    for key, value in values.items():
        *parents, leaf = key.split(".")[1:]
        node = out
        for part in parents:
            child = dataclasses.replace(getattr(node, part))
            setattr(node, part, child)
            node = child
        if not hasattr(node, leaf):
            raise ConfigError(f"--space {key}: no such training option")
        setattr(node, leaf, value)
    return out


# --------------------------------------------------------------------------- search


@dataclass
class TuneResult:
    """The best values, their val metric, every trial, and what the search cost."""

    best: dict[str, Any]
    value: float
    metric: str
    greater_is_better: bool
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    parent_run_id: str | None = None

    def set_flags(self) -> list[str]:
        return [f"--set {k}={fmt_value(v)}" for k, v in self.best.items()]


def fmt_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _rounded(value: Any) -> Any:
    """Three significant digits: a rate of 3.14e-4 and one of 3.1416e-4 train alike."""
    return float(f"{value:.3g}") if isinstance(value, float) else value


def pruning_callback(trial: Any, metric: str, row: dict[str, Any], runs: TuneRuns | None,
                     child: str | None) -> Any:
    """A TrainerCallback that reports each epoch's val metric to the Optuna trial (and the
    trial's MLflow run, and `row["value"]`), raising optuna.TrialPruned when the pruner says
    stop. Built here so importing this module does not import transformers."""
    import optuna
    from transformers import TrainerCallback

    class Pruning(TrainerCallback):
        reported = 0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None or not math.isfinite(value):
                return
            self.reported += 1
            row["value"] = float(value)
            trial.report(float(value), self.reported)
            if runs is not None and child is not None:
                runs.epoch(child, metric, float(value), self.reported)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {self.reported}")

    return Pruning()


def search(cfg: Config, trials: int | None = None, space: list[Dim] | None = None,
           runs: TuneRuns | None = None, epochs: float | None = None,
           pruner: Any = None) -> TuneResult:
    """Run the study on `cfg`'s tokenized train/val splits (see the module docstring);
    `pruner` replaces the median pruner (tests)."""
    import optuna

    from tunesmith import objectives
    from tunesmith.train_request import build_request
    from tunesmith.training.run import train_model

    n_trials = trials or cfg.tune.trials
    dims = space or space_of(cfg)
    task = objectives.get(cfg.task)
    base = dataclasses.replace(cfg.train, epochs=float(epochs or cfg.tune.epochs),
                               save_total_limit=1)
    if base.lr == "auto":
        base = dataclasses.replace(base, lr=None)  # the method's rate unless the space sets it
    metric, greater = task.best_metric(base)
    work = cfg.dirs.state / "tune"
    shutil.rmtree(work, ignore_errors=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if greater else "minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.train.seed, n_startup_trials=min(
            4, max(1, n_trials // 2)), multivariate=len(dims) > 1),
        # Prune from the first epoch on, once two trials have finished.
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        values = {d.key: _suggest(trial, d) for d in dims}
        child = runs.start(trial.number, values) if runs is not None else None
        t0 = time.perf_counter()
        row: dict[str, Any] = {"trial": trial.number, **values, "value": None}
        state = "pruned"
        try:
            options = apply(base, values)
            request = build_request(cfg, options)
            request = dataclasses.replace(
                request, output_dir=work / f"trial-{trial.number}",
                checkpoint_dir=work / "checkpoints",
                callbacks=[pruning_callback(trial, metric, row, runs, child)])
            print(f"tune: trial {trial.number + 1}/{n_trials} "
                  + " ".join(f"{k}={fmt_value(v)}" for k, v in values.items()),
                  file=sys.stderr, flush=True)
            summary = train_model(request)
            row["value"] = float(summary.val_metrics[metric])  # at the best epoch
            state = "complete"
            return row["value"]
        except optuna.TrialPruned as exc:
            row["pruned_at"] = str(exc)
            raise
        except Exception:
            state = "failed"
            raise
        finally:
            row.update(state=state, seconds=round(time.perf_counter() - t0, 1))
            rows.append(row)
            if runs is not None and child is not None:
                runs.end(child, metric, row["value"], state, row["seconds"])
            shutil.rmtree(work / f"trial-{trial.number}", ignore_errors=True)
            shutil.rmtree(work / "checkpoints", ignore_errors=True)

    study.optimize(objective, n_trials=n_trials, catch=())
    shutil.rmtree(work, ignore_errors=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"tune {cfg.name}: no trial finished ({n_trials} run)")
    best = {k: _rounded(v) for k, v in study.best_trial.params.items()}
    result = TuneResult(best, float(study.best_value), metric, greater, rows,
                        round(time.perf_counter() - started, 1),
                        runs.parent if runs is not None else None)
    if runs is not None:
        runs.finish(result, dims)
    return result


def _suggest(trial: Any, dim: Dim) -> Any:
    if dim.kind == "choice":
        return trial.suggest_categorical(dim.key, list(dim.choices))
    if dim.kind == "int":
        return trial.suggest_int(dim.key, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(dim.key, dim.low, dim.high, log=dim.log)


# ----------------------------------------------------------- `train.lr: auto` (train step)


def auto(cfg: Config) -> TuneResult:
    """The train step's search for `train.lr: auto`, logged as child runs of the pipeline run
    when one is open (the runner holds it around the step)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    runs = None
    if active is not None:  # the store the runner configured: train does not read `tracking`
        client = MlflowClient(mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        runs = TuneRuns(cfg.name, client, active.info.run_id)
    print(f"train: train.lr is auto: {cfg.tune.trials} trials of {cfg.tune.epochs:g} epochs "
          "on train/val first", file=sys.stderr, flush=True)
    return search(cfg, runs=runs)


# ------------------------------------------------------------------- the MLflow runs


class TuneRuns:
    """The MLflow runs of one search: every trial a child run of `parent` (the pipeline's
    run, or a `NAME-tune` run that `owned` says this search ends). Written with the client
    API, so the active run (the pipeline's) stays as it is."""

    def __init__(self, dataset: str, client: MlflowClient, parent: str,
                 owned: bool = False) -> None:
        self.dataset, self.client, self.parent, self.owned = dataset, client, parent, owned
        self.experiment = client.get_run(parent).info.experiment_id

    def start(self, number: int, values: dict[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment, run_name=f"{self.dataset}-trial-{number}",
            tags={"mlflow.parentRunId": self.parent, "tunesmith.kind": "tune-trial",
                  "tune.trial": str(number), "dataset": self.dataset})
        for key, value in values.items():
            self.client.log_param(run.info.run_id, key, str(value))
        return run.info.run_id

    def epoch(self, run_id: str, metric: str, value: float, epoch: int) -> None:
        self.client.log_metric(run_id, f"val/{metric}", value, step=epoch)

    def end(self, run_id: str, metric: str, value: float | None, state: str,
            seconds: float) -> None:
        if value is not None and math.isfinite(value):
            self.client.log_metric(run_id, f"best_val/{metric}", value)
        self.client.log_metric(run_id, "trial_seconds", seconds)
        self.client.set_tag(run_id, "tune.state", state)
        self.client.set_terminated(run_id, "FAILED" if state == "failed" else "FINISHED")

    def finish(self, result: TuneResult, dims: list[Dim]) -> None:
        """The search and its best values on the parent (params on a run of its own; tags
        and metrics on the pipeline run, whose params are the config's)."""
        chosen = {f"tune.best.{k}": str(v) for k, v in result.best.items()}
        if self.owned:
            for key, value in {**chosen, **{f"tune.space.{d.key}": d.spec() for d in dims},
                               "tune.trials": str(len(result.trials)),
                               "tune.metric": result.metric}.items():
                self.client.log_param(self.parent, key, value)
        for key, value in chosen.items():
            self.client.set_tag(self.parent, key, value)
        pruned = sum(r["state"] == "pruned" for r in result.trials)
        for key, value in {f"tune/best_val_{result.metric}": result.value,
                           "tune/seconds": result.seconds, "tune/trials": len(result.trials),
                           "tune/pruned": pruned}.items():
            self.client.log_metric(self.parent, key, float(value))
        if self.owned:
            self.client.set_terminated(self.parent, "FINISHED")

    def fail(self) -> None:
        if self.owned:
            self.client.set_terminated(self.parent, "FAILED")
