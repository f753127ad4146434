"""`tunesmith predict | promote | rollback`: serve and steer the registered models.

Commands live on `registry_app`; `tunesmith.cli` mounts them at the top level. Heavy
imports (MLflow, torch) happen inside the commands so `tunesmith --help` stays instant.
Errors a user can cause are raised as TunesmithError; `tunesmith.cli.main` prints them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tunesmith.errors import DataError

registry_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset name (datasets/NAME.yaml)")
]
VersionOpt = Annotated[int, typer.Option("--version", "-v", help="Registered model version")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value")]


def read_texts(path: Path, columns: list[str]) -> tuple[Any, str]:
    """A CSV/TSV/JSONL/parquet file as a frame, and the first of `columns` it has."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True)
        elif suffix == ".json":
            frame = pd.read_json(path)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(
                f"{path}: unsupported input format {suffix!r} (csv, tsv, jsonl, parquet)"
            )
    except ValueError as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    for name in columns:
        if name in frame.columns:
            return frame, name
    raise DataError(
        f"{path}: no text column {' or '.join(map(repr, columns))} "
        f"(columns: {', '.join(map(str, frame.columns))}); pass --text-col"
    )


def write_predictions(frame: Any, path: Path | None) -> None:
    """To `path` by its extension (csv/tsv/jsonl/parquet), or as CSV on stdout."""
    if path is None:
        frame.to_csv(sys.stdout, index=False)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")


@registry_app.command()
def predict(
    dataset: DatasetOpt,
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify (image paths for an image dataset)")] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to load")] = "champion",
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="CSV/TSV/JSONL/parquet file of texts")
    ] = None,
    text_col: Annotated[str | None, typer.Option(
        help="Text column of --input (image path column for an image dataset)")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write predictions here (by extension)")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="causal-lm: longest answer, in tokens")]
    = 64,
    temperature: Annotated[float, typer.Option(help="causal-lm: 0 = greedy, else sampling")]
    = 0.0,
    set_: SetOpt = None,
) -> None:
    """Classify texts (or image files) with `models:/DATASET@ALIAS` (offline); adds `label`
    and `score`. A causal-LM dataset's model answers each prompt instead (`response`)."""
    import pandas as pd

    from tunesmith import objectives
    from tunesmith.config import load_config
    from tunesmith.registry import store

    if bool(texts) == bool(input):
        raise typer.BadParameter("give either TEXT arguments or --input FILE (one of them)")
    if max_new_tokens < 1 or temperature < 0:
        from tunesmith.errors import ConfigError

        raise ConfigError(f"--max-new-tokens must be >= 1 (got {max_new_tokens}) and "
                          f"--temperature >= 0 (got {temperature:g})")
    cfg = load_config(dataset, overrides=set_ or [])
    task = objectives.get(cfg.task)
    if input is not None:
        # An explicit --text-col, else the dataset's own input column (so an export of the
        # source works as is), else the task's usual names.
        frame, column = read_texts(input, [text_col] if text_col else task.input_columns(cfg))
    else:
        frame, column = pd.DataFrame({"input": texts}), "input"
    inputs = task.predict_inputs(cfg, frame[column].astype(str).tolist(), input)
    if input is None:  # shown and written under the model's own input name (text, prompt, ...)
        frame, column = frame.rename(columns={"input": inputs.columns[0]}), inputs.columns[0]
        if len(inputs) != len(frame):  # arguments the task expanded (an image folder: its files)
            frame = inputs[[column]].copy()
    model = store.load_pyfunc(cfg, alias)
    scored = task.serve(model, inputs,
                        {"max_new_tokens": max_new_tokens, "temperature": temperature})
    # Classifiers answer label + score (+ prob_* columns, left out here); LMs a response.
    added = [c for c in scored.columns if not c.startswith("prob_")]
    result = frame.reset_index(drop=True).assign(
        **{c: scored[c].round(6).to_numpy() if c == "score" else scored[c].to_numpy()
           for c in added}
    )
    if input is None and output is None:
        for i, text in enumerate(result[column]):
            shown = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in result.loc[i, added]]
            typer.echo("\t".join([*shown, text]))
        return
    write_predictions(result, output)
    if output is not None:
        typer.echo(f"wrote {len(result)} predictions to {output}", err=True)


def _move(dataset: str, version: int, action: str, note: str, overrides: list[str]) -> None:
    from tunesmith.config import load_config
    from tunesmith.registry import store

    cfg = load_config(dataset, overrides=overrides)
    previous = store.move_champion(cfg, version, action, note)
    typer.echo(f"{dataset}: champion -> version {version} (was {previous}); {action} recorded")


@registry_app.command()
def promote(
    dataset: DatasetOpt,
    version: VersionOpt,
    note: Annotated[str, typer.Option(help="Why, recorded on the version")] = "",
    set_: SetOpt = None,
) -> None:
    """Make VERSION the champion by hand, bypassing the gate (recorded on the version)."""
    _move(dataset, version, "promote", note, set_ or [])


@registry_app.command()
def rollback(
    dataset: DatasetOpt,
    version: VersionOpt,
    note: Annotated[str, typer.Option(help="Why, recorded on the version")] = "",
    set_: SetOpt = None,
) -> None:
    """Point the champion back at an earlier VERSION (recorded on the version)."""
    _move(dataset, version, "rollback", note, set_ or [])
