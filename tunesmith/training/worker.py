"""One worker of a launched training run (tunesmith.training.launch): `python -m
tunesmith.training.worker REQUEST_JSON ERROR_DIR` under torch.distributed.run.

Trains the request with `train_model` (the Trainer reads RANK/WORLD_SIZE from torchrun's
environment; rank 0 writes the outputs). A failure is written as one JSON line,
`ERROR_DIR/rank-R.json` ({rank, world_size, type, message}), and the worker exits 1
without a traceback: the launching step raises the lowest rank's error as its one line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def load_request(path: Path):
    from tunesmith.training.request import TrainRequest

    return TrainRequest.from_json(path.read_text(encoding="utf-8"))


def one_line(exc: BaseException) -> str:
    from tunesmith.errors import TunesmithError

    text = str(exc) if isinstance(exc, TunesmithError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str]) -> int:
    request_json, error_dir = Path(argv[0]), Path(argv[1])
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        from tunesmith.training.run import train_model

        train_model(load_request(request_json))
    except Exception as exc:  # every failure: reported once, by the launching step
        report = {"rank": rank, "world_size": world, "type": type(exc).__name__,
                  "message": one_line(exc)}
        (error_dir / f"rank-{rank}.json").write_text(json.dumps(report), encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
