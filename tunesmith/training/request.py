"""The training core's request and its answer: one typed shape from the train step to the
core (in this process or, as JSON, in launched workers) and back (train_summary.json).

Imports nothing heavy: the flow unpickles step results on every cached run, and a launcher
reads the summary without loading torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.errors import ConfigError
from tunesmith.training.options import TrainOptions

if TYPE_CHECKING:
    from transformers import TrainerCallback


@dataclass
class TrainRequest:
    """Everything one run needs; `tasks/train.py` builds it from the Config."""

    base_model: str  # from_pretrained path or hub id (already resolved)
    task: str  # "text-classification" | "causal-lm" | "image-classification"
    labels: list[str]
    tokenized_dir: Path  # holds train/ and val/ written with save_to_disk
    output_dir: Path  # gets model/, adapter/, train_summary.json, curve.csv
    checkpoint_dir: Path  # resumable checkpoints, one subfolder per fingerprint
    options: TrainOptions = field(default_factory=TrainOptions)
    data_digest: str = ""
    callbacks: list[TrainerCallback] = field(default_factory=list)  # extra hooks (tests, tools)

    def to_json(self) -> str:
        """What a launched worker reads (tunesmith.training.worker); callbacks stay here."""
        if self.callbacks:
            raise ConfigError("train.processes > 1: extra Trainer callbacks can't cross "
                              "into the launched worker processes")
        return json.dumps(dataclasses.asdict(self) | {"callbacks": []}, default=str)

    @classmethod
    def from_json(cls, text: str) -> TrainRequest:
        from tunesmith.training.options import options_from_dict

        values = json.loads(text)
        values["options"] = options_from_dict(values["options"])
        for key in ("tokenized_dir", "output_dir", "checkpoint_dir"):
            values[key] = Path(values[key])
        return cls(**values)


@dataclass
class TrainSummary:
    """What `train_summary.json` records."""

    method: str
    task: str
    lr: float
    epochs: float
    class_weights: list[float] | None
    trainable_params: int
    total_params: int
    trainable_share: float
    epochs_run: float
    steps: int
    best_epoch: float | None
    best_step: int | None
    metric: str
    best_metric: float | None
    val_metrics: dict[str, float]
    wall_time_s: float
    samples_per_s: float
    peak_memory_mb: float
    memory_kind: str  # "cpu_rss" (process peak RSS) or "cuda_allocated"
    device: str
    world_size: int
    precision: str
    batch_tokens: int  # the micro-batch token budget used (0: none)
    gradient_checkpointing: bool
    resumed_from: str | None
    fingerprint: str
    n_train: int
    n_val: int
    output_dir: str

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> TrainSummary:
        """A summary written by `write`; keys this version does not know are left out, so
        an older or newer train_summary.json still reads."""
        values = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
