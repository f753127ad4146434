"""tokenize: encode the clean splits for the model, saved as HF datasets on disk.

Text: the base model's fast tokenizer; causal LM: the prompt template and response-only
labels; images: the image processor's resize + centre crop (the same step name). What
encoding means is the task type's (its `encode`); the step writes meta.json (what training
reads: task, labels, base model, data digests) and swaps the finished output in.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config import Config
from tunesmith.jsonio import read_json, write_json
from tunesmith.logged import Logged, relative
from tunesmith.models import resolve_base
from tunesmith.steps import narrowed, task_of

META = "meta.json"
TOKEN_REPORT = "token_report.json"


@dataclass
class TokenizeResult:
    rows: dict[str, int]
    truncated_share: float
    tokenized_dir: Path
    logged: Logged = field(default_factory=Logged, repr=False)


@narrowed
def tokenize(cfg: Config) -> TokenizeResult:
    """Encode the clean splits into `cfg.dirs.tokenized/{train,val,test}` + meta + report."""
    out = cfg.dirs.tokenized
    base = resolve_base(cfg.model.base, cfg.root, tokenizer_only=True)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        report = task_of(cfg, "tokenize").encode(cfg, base, staging)
        meta, tags = report.pop("meta", {}), report.pop("tags", {})
        write_json(staging / TOKEN_REPORT, report)
        write_json(staging / META, {
            "task": cfg.task, "labels": cfg.labels, "base_model": base,
            "max_length": cfg.tokenize.max_length,
            "data_digest": read_json(cfg.dirs.clean / "report.json")["digests"], **meta})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    metrics = {"tokenize/truncated_share": report["truncated_share"]}
    metrics.update({f"tokenize/{k}_tokens_{split}": v
                    for split, stats in report.get("tokens", {}).items()
                    for k, v in stats.items()})
    logged = Logged(metrics=metrics, tags=tags,
                    artifacts=[(relative(out / TOKEN_REPORT, cfg.root), "tokenize")])
    return TokenizeResult(report["rows"], report["truncated_share"], out, logged=logged)
