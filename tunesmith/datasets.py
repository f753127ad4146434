"""`tunesmith dataset add` and `dataset check`: what a data team uses to onboard data."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from tunesmith.config import DATASETS_DIR, PARAMS_FILE, SourceConfig, find_root, load_config
from tunesmith.errors import ConfigError, DataError, ValidationFailed
from tunesmith.sources import is_url, read_table, require_columns

MAX_CLASSES = 100  # more distinct values than this is almost surely not a label column
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def add(name: str, *, source: str, task: str, text_col: str | None, label_col: str | None,
        prompt_col: str | None, response_col: str | None, fmt: str | None,
        delimiter: str | None, encoding: str, label_map: list[str], force: bool) -> Path:
    """Write datasets/NAME.yaml from the source's columns and labels; register it for DVC."""
    root = find_root()
    if not _NAME.match(name):
        raise ConfigError(f"dataset name {name!r}: use lowercase letters, digits, '_' or '-'")
    path = root / DATASETS_DIR / f"{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite)")
    src = SourceConfig(path=source, format=fmt, delimiter=delimiter, encoding=encoding)
    spec: dict = {"description": f"Added with `tunesmith dataset add` from {source}.",
                  "task": task, "source": src.model_dump(exclude_defaults=True)}
    if task == "causal-lm":
        if not (prompt_col and response_col):
            raise ConfigError("causal-lm datasets need --prompt-col and --response-col")
        spec["columns"] = {"prompt": prompt_col, "response": response_col}
    else:
        if not (text_col and label_col):
            raise ConfigError(f"{task} datasets need --text-col and --label-col")
        mapping = _parse_label_map(label_map)
        spec["columns"] = {"text": text_col, "label": label_col}
        spec["labels"] = _infer_labels(root, src, text_col, label_col, mapping)
        if mapping:
            spec["label_map"] = mapping
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    _register_for_dvc(root, name, source, task)
    cfg = load_config(name, root)  # fail now, naming the key, if what we wrote doesn't validate
    _add_prefect_deployment(root, name, cfg.schedule)
    return path


def _parse_label_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        raw, sep, label = pair.partition("=")
        if not sep or not raw or not label:
            raise ConfigError(f"--label-map {pair!r}: expected RAW=NAME, e.g. 0=negative")
        mapping[raw.strip()] = label.strip()
    return mapping


def _infer_labels(root: Path, src: SourceConfig, text_col: str, label_col: str,
                  mapping: dict[str, str]) -> list[str]:
    local = Path(src.path) if is_url(src.path) or Path(src.path).is_absolute() else root / src.path
    if is_url(src.path):
        raise ConfigError("dataset add with a URL source: download it once and pass the file, "
                          "then set source.path to the URL in the YAML")
    frame = read_table(local, src)
    require_columns(frame, [text_col, label_col], local)
    values = frame[label_col].dropna().astype(str).str.strip()
    labels = sorted({mapping.get(v, v) for v in values.unique() if v})
    if len(labels) > MAX_CLASSES:
        raise DataError(f"{local}: column {label_col!r} has {len(labels)} distinct values; "
                        "is it really the label column?")
    if len(labels) < 2:
        raise DataError(f"{local}: column {label_col!r} has only {labels} as labels; "
                        "a classifier needs at least two")
    return labels


def _register_for_dvc(root: Path, name: str, source: str, task: str) -> None:
    """Add NAME and its source to params.yaml's `datasets:` (what dvc.yaml iterates over),
    and NAME's metrics and plots to dvc.yaml.

    Edited as text so the files' comments and layout survive.
    """
    params = root / PARAMS_FILE
    text = params.read_text(encoding="utf-8")
    current = yaml.safe_load(text).get("datasets") or {}
    current[name] = {"source": source}
    block = ["datasets:\n"] + [
        f"  {n}: {{source: {yaml.safe_dump(v['source'], default_style=None).splitlines()[0]}}}\n"
        for n, v in current.items()
    ]
    lines = text.splitlines(keepends=True)
    idx = next((i for i, line in enumerate(lines) if line.startswith("datasets:")), None)
    if idx is None:
        params.write_text(text + "\n" + "".join(block), encoding="utf-8")
        return
    end = idx + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    lines[idx:end] = block
    params.write_text("".join(lines), encoding="utf-8")
    _add_dvc_metrics_and_plots(root, name, task)


def dvc_entries(name: str, reports: str = "reports", models: str = "models",
                task: str = "text-classification") -> dict[str, str]:
    """dvc.yaml's top-level `metrics:` item and `plots:` items for one dataset, as YAML text.

    DVC cannot iterate over `datasets:` in these sections, so each dataset gets its own.
    A causal LM has no confusion/ROC/PR files, only the training curve.
    """
    ev = f"{reports}/{name}/eval"
    plots = [
        (f"{ev}/confusion.csv", "confusion", "actual", "predicted", "confusion matrix (test)"),
        (f"{ev}/roc.csv", "simple", "fpr", "tpr", "ROC (test)"),
        (f"{ev}/pr.csv", "simple", "recall", "precision", "precision-recall (test)"),
        (f"{models}/{name}/curve.csv", "linear", "step", "[loss, eval_loss]", "training curve"),
    ]
    if task == "causal-lm":
        plots = plots[-1:]
    return {
        "metrics": f"  - {ev}/metrics.json\n",
        "plots": "".join(
            f"  - {path}:\n      template: {template}\n      x: {x}\n      y: {y}\n"
            f"      title: {name} {title}\n"
            for path, template, x, y, title in plots
        ),
    }


def _add_dvc_metrics_and_plots(root: Path, name: str, task: str) -> None:
    """Append NAME's entries to dvc.yaml's `metrics:` and `plots:` (as text, like params)."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        return
    paths = yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8")).get("paths") or {}
    entries = dvc_entries(name, paths.get("reports", "reports"), paths.get("models", "models"),
                          task)
    text = dvc_yaml.read_text(encoding="utf-8")
    for section, block in entries.items():
        if block.splitlines()[0].split("- ", 1)[1].rstrip(":") in text:
            continue  # already listed (a re-add with --force)
        lines = text.splitlines(keepends=True)
        idx = next((i for i, line in enumerate(lines) if line.rstrip() == f"{section}:"), None)
        if idx is None:
            text = text.rstrip("\n") + f"\n\n{section}:\n{block}"
            continue
        end = idx + 1
        while end < len(lines) and (lines[end].startswith("  ") or not lines[end].strip()):
            end += 1
        while end > idx + 1 and not lines[end - 1].strip():
            end -= 1  # keep the blank line that separates sections after our block
        lines[end:end] = [block]
        text = "".join(lines)
    dvc_yaml.write_text(text, encoding="utf-8")


def prefect_deployment(name: str, schedule: str) -> str:
    """prefect.yaml's deployment for one dataset (on the shared `retrain` definition)."""
    return (f"  - <<: *retrain\n    name: retrain-{name}\n"
            f"    description: Scheduled retrain of {name} (added by `tunesmith dataset add`).\n"
            f"    parameters: {{dataset: {name}}}\n"
            f"    schedules:\n      - cron: \"{schedule}\"\n        timezone: UTC\n")


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


def check(name: str, overrides: list[str], echo: Callable[[str], None] = print) -> bool:
    """Ingest, clean and validate `name`; print a short report. True when the data passes."""
    import time

    from tasks.clean import clean
    from tasks.ingest import ingest
    from tasks.validate import validate

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
    echo(f"reports: {cfg.dirs.clean / 'report.json'}, {cfg.dirs.validation}")
    echo("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
         + f" ({ing.rows} rows in, {cln.rows_out} out)")
    return ok


def _echo_clean_report(cfg, echo: Callable[[str], None]) -> None:
    from tunesmith.jsonio import read_json

    report = read_json(cfg.dirs.clean / "report.json")
    echo(f"{cfg.name}: {report['rows_in']} rows in, {report['rows_out']} kept")
    for reason, info in report["dropped"].items():
        first = info["examples"][0] if info["examples"] else {}
        echo(f"  dropped {info['count']:>7} {reason:22} e.g. row {first.get('row')}: "
             f"{str(first.get('text', first.get('prompt', '')))[:60]!r}")
    if report.get("conflicting_labels"):
        pair = report["conflicting_labels"][:2]
        echo("  conflicting labels, e.g. " + "; ".join(
            f"row {c['row']} {c['label']!r}: {c['text'][:40]!r}" for c in pair)
            + f" (all in {cfg.dirs.clean / 'dropped.csv'})")
    if "class_balance" in report:
        train = report["class_balance"]["train"]
        total = sum(train.values()) or 1
        echo("  class balance (train): " + ", ".join(
            f"{k} {v} ({v / total:.0%})" for k, v in train.items()))
    chars = report["text_chars"]
    echo(f"  text length (chars): p5 {chars['p5']}, p50 {chars['p50']}, p95 {chars['p95']}, "
         f"max {chars['max']}")
    sizes = report["split_sizes"]
    echo(f"  splits: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}")
