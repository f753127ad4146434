"""clean: normalise, map labels, drop bad rows by reason, de-duplicate, split without leaks.

What "bad" and "duplicate" mean is the task type's (its `clean`); the step gives it a
staging folder and swaps the finished output in, so a failed clean leaves no half output.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config import Config
from tunesmith.jsonio import read_json, write_json
from tunesmith.logged import Logged, relative
from tunesmith.steps import narrowed, task_of

SPLITS = ("train", "val", "test")
REPORT = "report.json"


@dataclass
class CleanResult:
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    split_sizes: dict[str, int]
    clean_dir: Path
    logged: Logged = field(default_factory=Logged, repr=False)


@narrowed
def clean(cfg: Config) -> CleanResult:
    """Clean `data/raw/NAME` into train/val/test parquet files plus a report of every drop."""
    out = cfg.dirs.clean
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        report = task_of(cfg, "clean").clean(cfg, staging)
        report["source_sha256"] = read_json(cfg.dirs.raw / "manifest.json")["sha256"]
        write_json(staging / REPORT, report)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return CleanResult(report["rows_in"], report["rows_out"],
                       {k: v["count"] for k, v in report["dropped"].items()},
                       report["split_sizes"], out, logged=_logged(cfg, report))


def _logged(cfg: Config, report: dict) -> Logged:
    """Rows kept and dropped by reason, and each split as an MLflow dataset with its digest."""
    metrics = {"clean/rows_in": report["rows_in"], "clean/rows_out": report["rows_out"]}
    metrics.update({f"clean/dropped/{k}": v["count"] for k, v in report["dropped"].items()})
    metrics.update({f"clean/{s}_rows": n for s, n in report["split_sizes"].items()})
    tags, inputs = {}, []
    for split in SPLITS:
        digest = report["digests"][split]
        tags[f"data.{split}.digest"] = digest
        tags[f"data.{split}.rows"] = str(report["split_sizes"][split])
        inputs.append({"path": relative(cfg.dirs.clean / f"{split}.parquet", cfg.root),
                       "name": f"{cfg.name}-{split}", "digest": digest, "context": split,
                       "targets": "label"})
    artifacts = [(relative(cfg.dirs.clean / name, cfg.root), "data")
                 for name in (REPORT, "dropped.csv") if (cfg.dirs.clean / name).is_file()]
    return Logged(metrics=metrics, tags=tags, inputs=inputs, artifacts=artifacts)
