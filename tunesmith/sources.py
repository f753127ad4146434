"""Reading a dataset's source as configured: csv, tsv, jsonl, parquet or a saved HF dataset.

Every failure a user can cause becomes a `DataError` naming the file and what to change.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from tunesmith.config import SourceConfig
from tunesmith.errors import DataError

# Split names a source may use (folders, file stems, DatasetDict keys, a split column), as
# the pipeline's three: a given held-out split that is not "test" becomes test (clean).
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}
GIVEN_SPLIT = "split"  # the ingested rows' column holding the given split, when there is one
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def source_format(src: SourceConfig, path: Path) -> str:
    """The configured format, else inferred: a directory is a saved HF dataset."""
    if src.format:
        return src.format
    if path.is_dir():
        return "files" if split_files(path) and not _saved_dataset(path) else "hf"
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "csv"
    if suffix not in EXTENSIONS:
        raise DataError(f"{path}: can't infer the format from '{suffix}'; set source.format")
    return EXTENSIONS[suffix]


def _saved_dataset(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))


def split_files(folder: Path) -> dict[str, Path]:
    """{split: file} for a folder of tables named by split (train.csv, dev.tsv, ...)."""
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        split = SPLIT_NAMES.get(f.stem.lower())
        if f.is_file() and split and f.suffix.lower() in EXTENSIONS:
            if split in found:
                raise DataError(f"{folder}: {found[split].name} and {f.name} are both the "
                                f"{split} split; keep one")
            found[split] = f
    return found


def given_split(values: pd.Series, where: str) -> pd.Series:
    """A source's split names as train/val/test; an unknown name is one line naming its row."""
    names = values.astype(str).str.strip().str.lower()
    mapped = names.map(SPLIT_NAMES)
    if mapped.isna().any():
        row = int(mapped.isna().to_numpy().argmax())
        raise DataError(f"{where}: row {row + 1}: split {values.iloc[row]!r} is not one of "
                        f"{', '.join(sorted(SPLIT_NAMES))}")
    return mapped


def fetch(url: str, dest: Path, max_mb: int = 2048, timeout_s: float = 60) -> Path:
    """Download `url` (http or https only) to `dest`, at most `max_mb` MB, each read waiting
    at most `timeout_s` (the Prefect task around ingest retries a failure)."""
    if not is_url(url):
        raise DataError(f"source.path {url}: only http:// and https:// URLs are fetched")
    dest.parent.mkdir(parents=True, exist_ok=True)
    limit, copied = max_mb * 2**20, 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, dest.open("wb") as fh:
            for block in iter(lambda: resp.read(1 << 20), b""):
                copied += len(block)
                if copied > limit:
                    raise DataError(f"source.path {url}: larger than source.max_download_mb "
                                    f"({max_mb} MB); raise it or download the file yourself")
                fh.write(block)
    except DataError:
        dest.unlink(missing_ok=True)
        raise
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise DataError(f"source.path {url}: download failed: {exc}") from exc
    return dest


def file_digest(path: Path) -> str:
    """sha256 of a file, or of every file (sorted by relative path) in a directory."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_table(path: Path, src: SourceConfig, shown: Path | None = None) -> pd.DataFrame:
    """Read `path` with the source's options; every column as str (missing -> None).
    Errors name `shown` (the user's file when `path` is ingest's copy of it)."""
    try:
        return _read_table(path, src)
    except DataError as exc:
        if shown is None:
            raise
        raise DataError(str(exc).replace(str(path), str(shown))) from None


def _read_table(path: Path, src: SourceConfig) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"source.path: file not found: {path}")
    fmt = source_format(src, path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        frame = _read(path, fmt, src)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid {src.encoding} (byte {exc.start}: {exc.reason}); "
            "set source.encoding (e.g. latin-1)"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: can't parse as {fmt}: {first}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _read(path: Path, fmt: str, src: SourceConfig) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, fmt, src)
    if fmt in ("json", "jsonl"):
        # json: one array of objects (Alpaca's files); jsonl: one object per line.
        frame = pd.read_json(path, lines=fmt == "jsonl", dtype=False, encoding=src.encoding)
        return frame.astype(object).where(frame.notna(), None).map(
            lambda v: v if v is None or isinstance(v, (list, dict)) else str(v)
        )
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        return _as_str(frame)
    if fmt == "hf":
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if not isinstance(loaded, datasets.DatasetDict):
            return _as_str(loaded.to_pandas())
        # A DatasetDict's splits are kept (clean.split.given), as its keys say.
        parts = [_as_str(part.to_pandas()).assign(**{GIVEN_SPLIT: name})
                 for name, part in loaded.items()]
        frame = pd.concat(parts, ignore_index=True)
        frame[GIVEN_SPLIT] = given_split(frame[GIVEN_SPLIT], f"{path} (DatasetDict keys)")
        return frame
    if fmt == "files":
        parts = []
        for split, file in split_files(path).items():
            part = _read_table(file, src.model_copy(update={"format": None}))
            parts.append(part.assign(**{GIVEN_SPLIT: split}))
        if not parts:
            raise DataError(f"{path}: no tables named by split (train.csv, val.csv, test.csv)")
        return pd.concat(parts, ignore_index=True)
    raise DataError(f"{path}: unsupported format {fmt}")


def _read_delimited(path: Path, fmt: str, src: SourceConfig) -> pd.DataFrame:
    """A CSV/TSV; rows with more fields than the header are named (pandas would otherwise
    take the first column as an index when the first row is long, shifting every column)."""
    import warnings

    sep = src.delimiter or ("\t" if fmt == "tsv" else ",")
    quoting = 3 if fmt == "tsv" else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # "loss of data"
            return pd.read_csv(
                path, sep=sep, encoding=src.encoding, dtype=str, keep_default_na=False,
                na_values=[""], header=0 if src.header else None, index_col=False,
                names=src.column_names or None, quoting=quoting)
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        ragged = _ragged_lines(path, sep, src, quoting)
        if not ragged:
            raise
        (line, got), width = ragged[0], _header_width(path, sep, src, quoting)
        more = "" if len(ragged) == 1 else f" ({len(ragged)} rows like it: lines " + ", ".join(
            str(n) for n, _ in ragged[:5]) + (", ...)" if len(ragged) > 5 else ")")
        raise DataError(f"{path}: line {line} has {got} fields but the header has {width}"
                        f"{more}; quote fields that contain {sep!r}, or set source.delimiter"
                        ) from None


def _header_width(path: Path, sep: str, src: SourceConfig, quoting: int) -> int:
    import csv

    with path.open(encoding=src.encoding, newline="") as fh:
        first = next(csv.reader(fh, delimiter=sep, quoting=quoting), [])
    return len(src.column_names) if src.column_names else len(first)


def _ragged_lines(path: Path, sep: str, src: SourceConfig, quoting: int) -> list[tuple[int, int]]:
    """(1-based line, field count) of every record longer than the header (run only after
    pandas refused the file, so the scan costs nothing on good files)."""
    import csv

    width = _header_width(path, sep, src, quoting)
    out = []
    with path.open(encoding=src.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=sep, quoting=quoting)
        for record in reader:
            if len(record) > width:
                out.append((reader.line_num, len(record)))
    return out


def _as_str(frame: pd.DataFrame) -> pd.DataFrame:
    # Labels may be ints in parquet/HF data; the pipeline maps labels as strings.
    out = frame.copy()
    for col in out.columns:
        if (out[col].dtype != object
                or not out[col].map(lambda v: isinstance(v, (list, dict))).any()):
            out[col] = out[col].astype("string").astype(object).where(out[col].notna(), None)
    return out


def require_columns(frame: pd.DataFrame, needed: list[str], path: Path) -> None:
    """Fail with the columns that are there, and a delimiter hint when only one was found."""
    missing = [c for c in needed if c not in frame.columns]
    if not missing:
        return
    found = list(frame.columns)
    hint = ""
    if len(found) == 1:
        hint = " (one column only: wrong delimiter? set source.delimiter)"
    raise DataError(
        f"{path}: column {missing[0]!r} not found; columns are {found[:10]}{hint}"
    )


def ingest_table(cfg: Any, staging: Path, columns: list[str]) -> tuple[pd.DataFrame, dict]:
    """A table source (file, folder of a saved HF dataset or of per-split tables, or URL)
    copied into `staging`.

    Returns its rows (the `columns` it must have, every value a str, plus GIVEN_SPLIT when
    the source names each row's split) and the manifest fields. No timestamp in the
    manifest: the same source must give byte-identical outputs, or DVC and the step cache
    would see a change where there is none.
    """
    src_path = cfg.source.path
    if is_url(src_path):
        local = fetch(src_path, staging / ("source" + Path(src_path.split("?")[0]).suffix),
                      cfg.source.max_download_mb)
    else:
        local = Path(src_path) if Path(src_path).is_absolute() else cfg.root / src_path
    if not local.exists():
        raise DataError(f"source.path: file not found: {local}")
    fmt = source_format(cfg.source, local)
    # Copy first, then read and hash the copy: a source appended to while ingest runs gives
    # a manifest whose rows and digest are those of the one snapshot the steps use.
    copy = staging / ("source" + ("" if local.is_dir() else local.suffix))
    if local.parent != staging:
        if local.is_dir():
            shutil.copytree(local, copy)
        else:
            shutil.copyfile(local, copy)
    stored = copy if copy.exists() else local
    frame = read_table(stored, cfg.source, shown=local)  # a DataError names the source file
    by_column = cfg.columns.split
    require_columns(frame, columns + ([by_column] if by_column else []), local)
    manifest = {"source": src_path, "format": fmt, "rows": len(frame),
                "columns": list(frame.columns), "sha256": file_digest(stored),
                "bytes": stored.stat().st_size}
    out = frame[columns].copy()
    if by_column:
        out[GIVEN_SPLIT] = given_split(frame[by_column], f"{local} column {by_column!r}")
    elif GIVEN_SPLIT in frame and GIVEN_SPLIT not in columns:
        out[GIVEN_SPLIT] = frame[GIVEN_SPLIT]
    return out, manifest
