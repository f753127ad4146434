"""The `tunesmith` command line. Heavy imports happen inside commands so `--help` is instant."""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import threading
import time
from typing import Annotated

import typer

from tunesmith import env_defaults, gcpolicy
from tunesmith.cli_registry import registry_app
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.steps import STEPS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune pretrained models on your datasets: tunesmith run --dataset NAME")
dataset_app = typer.Typer(no_args_is_help=True, help="Add, list and check datasets.")
app.add_typer(dataset_app, name="dataset")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d",
                                         help="Dataset name (datasets/NAME.yaml)")]


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    env_defaults.apply()  # offline, quiet, no telemetry (tunesmith/env_defaults.py)
    try:
        # With standalone_mode off, click returns typer.Exit's code instead of exiting.
        with gcpolicy.pipeline_thresholds():  # 2.9 s less GC per run (tunesmith/gcpolicy.py)
            code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except TunesmithError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors (click's, or typer 0.29's vendored copy of click) show themselves.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def entry() -> None:
    """The console script: `main()`, then exit without CPython's final teardown.

    With torch, transformers, MLflow and GX loaded, interpreter finalisation (freeing every
    module and object after the atexit handlers) took 1.5-2.0 s per process here (5 runs,
    2026-12-01; 4-5 s on an earlier, slower host), paid by every `tunesmith run` and every DVC
    stage: ~14 s of an 8-stage `dvc repro`. A private API (`threading._shutdown`), kept for
    that; tests/test_cli_entry.py fails if it stops keeping exit codes, output or the
    atexit handlers (the temporary Prefect API is stopped by one). Everything
    a normal exit does before that still runs, in the same order: threading's exit hooks
    (Prefect drains its log and event workers) and the join of non-daemon threads, then the
    atexit handlers (Prefect stops its ephemeral server, MLflow and logging flush), then the
    standard streams are flushed.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    threading._shutdown()  # what Py_FinalizeEx calls first: exit hooks, then thread joins
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_step(step: str, dataset: str, overrides: list[str] | None = None):
    """Load config and run `tasks.<step>.<step>`: the one code path DVC and the CLI share."""
    from tunesmith.config import load_config
    from tunesmith.tasks.runner import run_step as run

    return run(load_config(dataset, overrides=overrides or []), step)


def _summary(result: object) -> str:
    if dataclasses.is_dataclass(result):
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                  if f.repr}
        return ", ".join(f"{k}={v}" for k, v in fields.items() if not isinstance(v, (dict, list))
                         or len(str(v)) < 120)
    return str(result)


@app.command()
def step(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STEPS)}")],
    dataset: DatasetOpt,
    set_: SetOpt = None,
) -> None:
    """Run one pipeline step for one dataset (what dvc.yaml calls)."""
    if name not in STEPS:
        raise ConfigError(f"unknown step {name!r}; steps are {', '.join(STEPS)}")
    started = time.perf_counter()
    result = run_step(name, dataset, set_)
    typer.echo(f"{name} {dataset}: {_summary(result)} ({time.perf_counter() - started:.1f}s)")
    for line in getattr(result, "verdict", None) or []:  # register: the gate's verdict
        typer.echo(line)


@app.command()
def run(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dataset in datasets/")] = False,
    set_: SetOpt = None,
) -> None:
    """Run the whole pipeline through Prefect (ephemeral API unless PREFECT_API_URL is set)."""
    if bool(dataset) == all_:
        raise typer.BadParameter("give --dataset NAME or --all")
    from tunesmith.config import find_root
    from tunesmith.prefect_env import configure, start_local_api, wait_for_local_api

    configure(find_root())  # before Prefect is imported
    start_local_api()  # boots while the flow's imports below run
    from tunesmith.flows.retrain import import_validation_in_background, open_tracking, run_from_cli

    open_tracking(None if all_ else dataset, set_ or [])  # also while the API boots
    import_validation_in_background()  # in the waits for the API
    wait_for_local_api()
    code = run_from_cli(dataset, all_, set_ or [])
    raise typer.Exit(code)


@app.command()
def tune(
    dataset: DatasetOpt,
    trials: Annotated[int | None, typer.Option(help="Trials (default: tune.trials)")] = None,
    space: Annotated[list[str] | None, typer.Option(
        "--space", help="KEY=LOW:HIGH[:log] or KEY=A,B,C, repeatable (default: train.lr "
        "log-uniform over [default/10, default*10])")] = None,
    epochs: Annotated[float | None, typer.Option(
        help="Epochs per trial (default: tune.epochs)")] = None,
    write: Annotated[bool, typer.Option(
        "--write", help="Write the best values into datasets/NAME.yaml")] = False,
    set_: SetOpt = None,
) -> None:
    """Choose training options on the val split (Optuna; the test split is never read):
    short pruned trials, each an MLflow child run; prints the best as --set flags."""
    from tunesmith.tune_cli import run_cli

    run_cli(dataset, set_ or [], trials, space or [], epochs, write, echo=typer.echo)


@dataset_app.command("list")
def dataset_list() -> None:
    """List datasets with their task, source and schedule."""
    from tunesmith.config import dataset_names, find_root, load_config

    root = find_root()
    for name in dataset_names(root):
        try:
            cfg = load_config(name, root)
            typer.echo(f"{name:20} {cfg.task:22} {cfg.schedule:12} {cfg.source.path}")
        except TunesmithError as exc:
            typer.echo(f"{name:20} INVALID: {exc}")


@dataset_app.command("check")
def dataset_check(name: str, set_: SetOpt = None) -> None:
    """Ingest + clean + validate NAME and print what is wrong with the data, if anything."""
    from tunesmith.cli_datasets import check

    ok = check(name, set_ or [], echo=typer.echo)
    raise typer.Exit(0 if ok else 4)


@dataset_app.command("add")
def dataset_add(
    name: str,
    source: Annotated[str, typer.Option(help="Path of the data: a table, or a folder per class")],
    task: Annotated[str, typer.Option(
        help="text-classification | causal-lm | image-classification")] = "text-classification",
    text_col: Annotated[str | None, typer.Option(help="Text column")] = None,
    label_col: Annotated[str | None, typer.Option(help="Label column")] = None,
    prompt_col: Annotated[str | None, typer.Option(help="Prompt column (causal-lm)")] = None,
    response_col: Annotated[str | None, typer.Option(help="Response column (causal-lm)")] = None,
    image_col: Annotated[str | None, typer.Option(
        help="Image path column (image-classification from a table)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv|tsv|jsonl|parquet|hf|folder")]
    = None,
    delimiter: Annotated[str | None, typer.Option(help="Field delimiter")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding")] = "utf-8",
    label_map: Annotated[list[str] | None, typer.Option(
        "--label-map", help="RAW=NAME, repeatable (e.g. --label-map 0=negative)")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing datasets/NAME.yaml")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip `dataset check`")] = False,
    set_: SetOpt = None,
) -> None:
    """Write datasets/NAME.yaml with inferred labels and defaults, then check it."""
    from tunesmith.cli_datasets import add

    columns = {"text": text_col, "label": label_col, "prompt": prompt_col,
               "response": response_col, "image": image_col}
    path, ok = add(name, source=source, task=task, columns=columns, fmt=fmt,
                   delimiter=delimiter, encoding=encoding, label_map=label_map or [],
                   force=force, check_data=not no_check, overrides=set_ or [],
                   echo=typer.echo)
    if ok:
        typer.echo(f"wrote {path}")
    raise typer.Exit(0 if ok else 4)


@app.command("dvc-yaml")
def dvc_yaml(
    check: Annotated[bool, typer.Option("--check", help="Only say whether dvc.yaml is current")]
    = False,
) -> None:
    """Write dvc.yaml from datasets/*.yaml and the step declarations (--check: compare)."""
    from tunesmith.config import find_root
    from tunesmith.dvcfile import DVC_FILE, generate, render, write

    root = find_root()
    if check:
        current = (root / DVC_FILE).read_text(encoding="utf-8") if (root / DVC_FILE).is_file() \
            else ""
        if current != render(generate(root)):
            typer.secho(f"{root / DVC_FILE} is out of date: run `tunesmith dvc-yaml`", err=True,
                        fg="red")
            raise typer.Exit(2)
        typer.echo(f"{root / DVC_FILE} is current")
        return
    typer.echo(f"wrote {write(root)}")


@app.command()
def resolve(dataset: DatasetOpt, set_: SetOpt = None) -> None:
    """Check NAME's config and write what each step reads (dvc.yaml's NAME-inputs stage)."""
    from tunesmith.config import load_config
    from tunesmith.dvcfile import resolve as write_inputs

    paths = write_inputs(load_config(dataset, overrides=set_ or []))
    typer.echo(f"{dataset}: config valid; inputs of {len(paths)} steps in {paths[0].parent}")


@app.command()
def serve() -> None:
    """Serve one scheduled retrain deployment per dataset from this process (Ctrl-C stops)."""
    from tunesmith.config import find_root
    from tunesmith.prefect_env import configure, start_local_api, wait_for_local_api

    configure(find_root())
    start_local_api(own_session=True)  # Ctrl-C must not stop the API before serve pauses
    from tunesmith.flows.serve import serve_all

    wait_for_local_api()
    with gcpolicy.thresholds(gcpolicy.CPYTHON_THRESHOLDS):
        serve_all()


for _command in registry_app.registered_commands:  # predict, promote, rollback
    app.registered_commands.append(_command)

if __name__ == "__main__":
    main()
