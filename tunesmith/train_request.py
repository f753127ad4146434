"""Config -> TrainRequest: what the train step and each tuning trial hand the training core.

In the library, not in tasks/train.py, because tunesmith.tune builds the same request for
every trial and the library never imports a step (tests/test_import_layers.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.config import Config
from tunesmith.errors import ConfigError, DataError
from tunesmith.models import resolve_base
from tunesmith.steps import task_of

if TYPE_CHECKING:
    from tunesmith.training.options import TrainOptions
    from tunesmith.training.request import TrainRequest


def build_request(cfg: Config, options: TrainOptions | None = None) -> TrainRequest:
    """Config -> TrainRequest (with `options` instead of cfg.train if given: a tuning trial,
    the values `auto` chose); one-line errors for a missing tokenize output or label drift."""
    from tunesmith.training.data import read_meta
    from tunesmith.training.methods import check_environment
    from tunesmith.training.request import TrainRequest

    options = options or cfg.train
    check_environment(options)  # e.g. QLoRA without CUDA: fail before touching anything
    tokenized = cfg.dirs.tokenized
    meta = read_meta(tokenized)
    if not meta or not (tokenized / "train").is_dir() or not (tokenized / "val").is_dir():
        raise DataError(f"{tokenized}: no tokenized train/val splits: run `tunesmith step tokenize "
                        f"--dataset {cfg.name}` first")
    if task_of(cfg, "train").LABELLED and meta.get("labels") != cfg.labels:
        raise DataError(f"{tokenized / 'meta.json'}: labels {meta.get('labels')} differ from the "
                        f"config's {cfg.labels}: rerun the tokenize step")
    if options.warm_start:
        path = Path(options.warm_start)
        path = path if path.is_absolute() else cfg.root / path
        if not path.is_dir():
            raise ConfigError(f"train.warm_start: {path} is not a directory")
        options = dataclasses.replace(options, warm_start=str(path))
    return TrainRequest(
        base_model=resolve_base(cfg.model.base, cfg.root),
        task=cfg.task,
        labels=list(cfg.labels),
        tokenized_dir=tokenized,
        output_dir=cfg.dirs.model,
        checkpoint_dir=cfg.dirs.state / "checkpoints",
        options=options,
        data_digest=json.dumps(meta.get("data_digest", ""), sort_keys=True),
    )
