"""What the task types use to describe a data source for `tunesmith dataset add`: the local
copy of a source, its labels, the options a task needs, and the settings that would accept
data a check refused. The command itself is tunesmith/cli_datasets.py.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import Config, SourceConfig
from tunesmith.errors import ConfigError, DataError
from tunesmith.sources import read_table, require_columns

MAX_CLASSES = 100  # more distinct values than this is almost surely not a label column


def settings_to_relax(cfg: Config) -> list[str]:
    """`--set key=... (now value)` for each setting that bounds an expectation that failed in
    the last validation (reports/NAME/validation/result.json): the options a refused
    `dataset add` names."""
    from tunesmith.jsonio import read_json

    path = cfg.dirs.validation / "result.json"
    records = read_json(path).get("expectations", []) if path.is_file() else []
    keys = dict.fromkeys(k for r in records if not r["success"] for k in r.get("settings", []))
    now = {key: _value(cfg, key) for key in keys}
    # an unset bound (validate.max_rows: null) is not the one that failed
    return [f"--set {key}=... (now {value})" for key, value in now.items() if value is not None]


def _value(cfg: Config, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = getattr(node, {"validate": "validate_", "register": "register_"}.get(part, part))
    return node


def parse_label_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        raw, sep, label = pair.partition("=")
        if not sep or not raw or not label:
            raise ConfigError(f"--label-map {pair!r}: expected RAW=NAME, e.g. 0=negative")
        mapping[raw.strip()] = label.strip()
    return mapping


def local_source(root: Path, src: SourceConfig) -> Path:
    return Path(src.path) if Path(src.path).is_absolute() else root / src.path


def require_options(task: str, columns: dict[str, str | None], roles: tuple[str, ...]) -> None:
    """One line naming the --<role>-col options a task type needs and did not get."""
    if missing := [r for r in roles if not columns.get(r)]:
        flags = " and ".join(f"--{r}-col" for r in missing)
        raise ConfigError(f"{task} datasets need {flags}")


def infer_labels(root: Path, src: SourceConfig, columns: list[str], label_col: str,
                 mapping: dict[str, str]) -> list[str]:
    """The sorted label set of a table's `label_col` (after `mapping`), checked for sense."""
    local = local_source(root, src)
    frame = read_table(local, src)
    require_columns(frame, columns, local)
    values = frame[label_col].dropna().astype(str).str.strip()
    return check_labels(sorted({mapping.get(v, v) for v in values.unique() if v}), local,
                        f"column {label_col!r}")


def check_labels(labels: list[str], local: Path, where: str) -> list[str]:
    if len(labels) > MAX_CLASSES:
        raise DataError(f"{local}: {where} has {len(labels)} distinct values; "
                        "is it really the label?")
    if len(labels) < 2:
        raise DataError(f"{local}: {where} has only {labels} as labels; "
                        "a classifier needs at least two")
    return labels
