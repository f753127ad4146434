"""`tunesmith dataset add` and `dataset check`: what a data team uses to onboard data.

A command, so above the steps: `check` runs the ingest, clean and validate steps on the new
dataset. The helpers the task types call while describing a source live in
tunesmith/datasets.py (the library never imports a step: tests/test_import_layers.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from tunesmith.config import (
    DATASETS_DIR,
    Config,
    SourceConfig,
    deep_merge,
    find_root,
    load_config,
    parse_overrides,
)
from tunesmith.datasets import parse_label_map, settings_to_relax
from tunesmith.dvcfile import DVC_FILE
from tunesmith.dvcfile import write as write_dvc_yaml
from tunesmith.errors import ConfigError, ValidationFailed
from tunesmith.sources import is_url

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def add(name: str, *, source: str, task: str, columns: dict[str, str | None], fmt: str | None,
        delimiter: str | None, encoding: str, label_map: list[str], force: bool,
        check_data: bool = True, overrides: list[str] | tuple[str, ...] = (),
        echo: Callable[[str], None] = print) -> tuple[Path, bool]:
    """Write datasets/NAME.yaml from the source's columns and labels, regenerate dvc.yaml,
    schedule it in prefect.yaml, then (`check_data`) run `dataset check`. Returns the YAML's
    path and whether the data passed.

    `columns`: role -> source column as given on the command line (None: not given); the
    task type says which roles it needs and how it finds its labels (`describe`) and which
    settings it measures on the data (`measure`, e.g. a causal LM's tokenize.max_length).
    `overrides` (`--set section.key=value`) are written into the YAML and win over both. A
    check that fails, or any error, puts every file back as it was (a corrected retry then
    works without --force), and says which settings would accept the data.
    """
    root = find_root()
    if not _NAME.match(name):
        raise ConfigError(f"dataset name {name!r}: use lowercase letters, digits, '_' or '-'")
    path = root / DATASETS_DIR / f"{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite)")
    touched = [path, root / DVC_FILE, root / "prefect.yaml"]
    before = {p: p.read_bytes() if p.is_file() else None for p in touched}
    try:
        _write_dataset(root, path, name, source, task, columns, fmt, delimiter, encoding,
                       label_map, parse_overrides(overrides), echo)
        ok = check(name, [], echo=echo) if check_data else True
    except BaseException:
        _restore(before)
        raise
    if not ok:
        fixes = settings_to_relax(load_config(name, root))
        _restore(before)
        echo(f"removed {path} again: fix the data"
             + (", or rerun the same command with " + " or ".join(fixes) if fixes else
                " and run the same command"))
    return path, ok


def _restore(before: dict[Path, bytes | None]) -> None:
    for p, content in before.items():
        if content is None:
            p.unlink(missing_ok=True)
        else:
            p.write_bytes(content)


def _write_dataset(root: Path, path: Path, name: str, source: str, task: str,
                   columns: dict[str, str | None], fmt: str | None, delimiter: str | None,
                   encoding: str, label_map: list[str], overrides: dict,
                   echo: Callable[[str], None]) -> None:
    from tunesmith import objectives

    if task not in objectives.MODULES:
        raise ConfigError(f"--task {task!r}: choose one of {', '.join(objectives.MODULES)}")
    if is_url(source):
        raise ConfigError("dataset add with a URL source: download it once and pass the file, "
                          "then set source.path to the URL in the YAML")
    src = SourceConfig(path=source, format=fmt, delimiter=delimiter, encoding=encoding)
    spec: dict = {"description": f"Added with `tunesmith dataset add` from {source}.",
                  "task": task, "source": src.model_dump(exclude_defaults=True)}
    kind = objectives.get(task)
    spec.update(kind.describe(root, src, columns, parse_label_map(label_map)))
    spec = deep_merge(spec, overrides)
    path.parent.mkdir(exist_ok=True)
    cfg = _write_spec(path, spec, name, root)
    measured, lines = kind.measure(cfg)
    measured = _unset(measured, spec)  # what the user (or describe) set stays
    if measured:
        cfg = _write_spec(path, deep_merge(spec, measured), name, root)
    for line in lines:
        echo(line)
    if (root / DVC_FILE).is_file():
        write_dvc_yaml(root)  # the new dataset's stages, metrics and plots
    _add_prefect_deployment(root, name, cfg.schedule)


def _write_spec(path: Path, spec: dict, name: str, root: Path) -> Config:
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_config(name, root)  # fails now, naming the key, if what we wrote is invalid


def _unset(settings: dict, spec: dict) -> dict:
    """The leaves of `settings` that `spec` does not set."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            if rest := _unset(value, spec[key]):
                out[key] = rest
        elif key not in spec:
            out[key] = value
    return out


def _add_prefect_deployment(root: Path, name: str, schedule: str) -> None:
    """Append NAME's deployment to prefect.yaml so `prefect deploy --all` schedules it too
    (`tunesmith serve` reads datasets/ directly and needs no entry)."""
    path = root / "prefect.yaml"
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    if f"name: retrain-{name}\n" in text:
        return  # already there (a re-add with --force); its cron is the user's to edit
    path.write_text(text.rstrip("\n") + "\n" + prefect_deployment(name, schedule),
                    encoding="utf-8")


def prefect_deployment(name: str, schedule: str) -> str:
    """prefect.yaml's deployment for one dataset (on the shared `retrain` definition)."""
    return (f"  - <<: *retrain\n    name: retrain-{name}\n"
            f"    description: Scheduled retrain of {name} (added by `tunesmith dataset add`).\n"
            f"    parameters: {{dataset: {name}}}\n"
            f"    schedules:\n      - cron: \"{schedule}\"\n        timezone: UTC\n")


def check(name: str, overrides: list[str], echo: Callable[[str], None] = print) -> bool:
    """Ingest, clean and validate `name`; print a short report. True when the data passes."""
    import time

    from tunesmith.tasks.clean import clean
    from tunesmith.tasks.ingest import ingest
    from tunesmith.tasks.validate import validate

    cfg = load_config(name, overrides=overrides)
    timings = {}
    started = time.perf_counter()
    ing = ingest(cfg)
    timings["ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    cln = clean(cfg)
    timings["clean"] = time.perf_counter() - started
    _echo_clean_report(cfg, echo)
    started = time.perf_counter()
    try:
        res = validate(cfg)
        ok, failures = True, []
        echo(f"validation: passed {res.n_expectations} expectations")
    except ValidationFailed as exc:
        ok, failures = False, [str(exc)]
    timings["validate"] = time.perf_counter() - started
    for line in failures:
        echo(f"validation: FAILED: {line}")
    summary = cfg.dirs.validation / "summary.md"
    if not ok and summary.is_file():
        # The terminal gets the failed rows of the table; summary.md has every expectation.
        lines = summary.read_text(encoding="utf-8").splitlines()
        echo("\n".join(line for line in lines if not line.startswith("| ") or "FAILED" in line
                        or line.startswith("| expectation")))
    for line in _token_budget(cfg):
        echo(line)
    echo(f"reports: {cfg.dirs.clean / 'report.json'}, {cfg.dirs.validation}")
    echo("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
         + f" ({ing.rows} rows in, {cln.rows_out} out)")
    return ok


def _echo_clean_report(cfg, echo: Callable[[str], None]) -> None:
    from tunesmith import objectives
    from tunesmith.jsonio import read_json

    report = read_json(cfg.dirs.clean / "report.json")
    lines = objectives.get(cfg.task).report_lines(report)
    echo(f"{cfg.name}: {lines[0]}")
    for line in lines[1:]:
        echo(line)


def _token_budget(cfg) -> list[str]:
    """What the `tokens` batch found (a causal LM's suite): rows max_length truncates, and
    rows it leaves nothing to learn from, which tokenize drops."""
    from tunesmith.jsonio import read_json

    path = cfg.dirs.validation / "result.json"
    records = read_json(path).get("expectations", []) if path.is_file() else []
    words = {"truncated": "truncated by tokenize.max_length",
             "nothing_to_learn": "left with no answer token (tokenize drops them)"}
    return [f"  tokens: {r['unexpected_count']} rows {words.get(r['column'], r['column'])} "
            f"({r['observed']})" for r in records
            if r["batch"] == "tokens" and r.get("unexpected_count") is not None]
