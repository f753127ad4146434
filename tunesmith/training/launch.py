"""Distributed training launched by the train step itself: torch.distributed.run's engine.

`train.processes` > 1 (or `nodes` > 1): the step writes its TrainRequest as JSON and runs
`python -m tunesmith.training.launch <torchrun arguments> -m tunesmith.training.worker ...`,
which is torchrun's own argument parsing and `elastic_launch` (torch.distributed.run) with
two changes: no restarts, and a failed worker ends the agent quietly, because each worker
writes its error as one JSON line (`worker.py`) and this module raises the first rank's as
the step's one-line error. Without that, a failure prints one traceback per rank plus
torchrun's own report. Rank 0 alone writes `models/NAME/` (train_model); the step's
process reads `train_summary.json` afterwards and does the MLflow logging as for one
process. The flow's train task, `tunesmith step train` and `dvc repro` all call the train
step, so they all launch this way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

from tunesmith import errors
from tunesmith.training.options import TrainOptions

WORKER_MODULE = "tunesmith.training.worker"


def local_processes(opts: TrainOptions) -> int:
    """Worker processes on this node: `auto` is one per visible GPU, 1 without one."""
    if opts.processes != "auto":
        return int(opts.processes)
    import torch

    return max(1, torch.cuda.device_count())


def is_launched(opts: TrainOptions) -> bool:
    """True when this step should launch workers: more than one process in all, and this
    process is not already one of torchrun's workers (then it trains itself, as under a
    hand-run `torchrun ... tunesmith step train`)."""
    inside = "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ
    return not inside and local_processes(opts) * opts.nodes > 1


def torchrun_args(opts: TrainOptions, request_json: Path, error_dir: Path) -> list[str]:
    """torchrun's command line for the workers."""
    n = local_processes(opts)
    if opts.nodes > 1:
        if not opts.rdzv_endpoint:
            raise errors.ConfigError(
                f"train.nodes={opts.nodes} needs train.rdzv_endpoint (host:port of node 0, "
                "which every node reaches; each node sets PET_NODE_RANK)")
        # Static rendezvous: the node rank comes from the environment (PET_NODE_RANK, read
        # by torchrun's parser), so node 0, where the flow runs and evaluate/register read
        # models/NAME/, holds global rank 0. c10d would number nodes in joining order.
        rendezvous = ["--rdzv-backend", "static", "--rdzv-endpoint", opts.rdzv_endpoint]
    else:
        rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
                      "--rdzv-id", str(uuid.uuid4())]  # torchrun --standalone
    return ["--nnodes", str(opts.nodes), "--nproc-per-node", str(n), "--max-restarts", "0",
            *rendezvous, "-m", WORKER_MODULE, str(request_json), str(error_dir)]


def worker_env(n_local: int) -> dict[str, str]:
    """The workers' environment: torchrun's OMP_NUM_THREADS=1 default made explicit, as the
    cores split between workers (2 workers on 2 cores: 1 thread each), unless set."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_local))
    return env


def launch(req) -> dict:
    """Train `req` (a TrainRequest) in torchrun-launched workers; the train summary (dict).

    Raises the first failing rank's error as one line (its TunesmithError class when it was
    one, EnvironmentProblem otherwise)."""
    import subprocess

    if req.callbacks:
        raise errors.ConfigError("train.processes > 1: extra Trainer callbacks can't cross "
                                 "into the launched worker processes")
    opts = req.options
    out = Path(req.output_dir)
    with tempfile.TemporaryDirectory(prefix="tunesmith-launch-") as tmp:
        request_json, error_dir = Path(tmp) / "request.json", Path(tmp) / "errors"
        error_dir.mkdir()
        request_json.write_text(json.dumps(dataclasses.asdict(req) | {"callbacks": []},
                                           default=str), encoding="utf-8")
        stamp = (out / "train_summary.json").stat().st_mtime_ns \
            if (out / "train_summary.json").is_file() else None
        cmd = [sys.executable, "-m", __name__, *torchrun_args(opts, request_json, error_dir)]
        done = subprocess.run(cmd, env=worker_env(local_processes(opts)), check=False)
        if done.returncode != 0:
            raise first_error(error_dir, done.returncode)
    summary = out / "train_summary.json"
    if not summary.is_file() or summary.stat().st_mtime_ns == stamp:
        raise errors.EnvironmentProblem(f"{summary}: the launched workers exited 0 without "
                                        "writing it (rank 0 writes it after training)")
    return json.loads(summary.read_text(encoding="utf-8"))


def first_error(error_dir: Path, returncode: int) -> errors.TunesmithError:
    """The failure to report: a worker killed by a signal first (the others then fail on
    their closed connections to it), else the lowest rank's own error, as its class."""
    import signal

    reports = {}
    for path in error_dir.glob("rank-*.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        reports[int(report["rank"])] = report
    exits = agent_exits(error_dir / "agent.json")
    # SIGTERM is how the agent stops the other workers after the first failure: not a cause.
    killed = sorted(rank for rank, code in exits.items()
                    if code < 0 and code != -signal.SIGTERM and rank not in reports)
    if killed or not reports:
        return errors.EnvironmentProblem(killed_worker(killed, exits, returncode))
    first = reports[min(reports)]
    cls = getattr(errors, first["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, errors.TunesmithError)):
        cls = errors.EnvironmentProblem
    return cls(f"rank {first['rank']} of {first['world_size']}: {first['message']}")


def agent_exits(agent_json: Path) -> dict[int, int]:
    """{rank: exit code} of the workers the agent saw fail (written by `main`)."""
    try:
        return {int(rank): int(code) for rank, code in
                json.loads(agent_json.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError):
        return {}


def killed_worker(killed: list[int], exits: dict[int, int], returncode: int) -> str:
    """The one line for a launch whose failing worker wrote no error of its own."""
    import signal

    if not exits:
        return (f"distributed training exited {returncode} before any worker started or "
                "reported an error (see the rendezvous/launcher output above)")
    rank = killed[0] if killed else min(exits)
    code = exits[rank]
    how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in
           signal.valid_signals() else f"exited with code {code}")
    return (f"worker rank {rank} {how} without an error of its own; the others were stopped "
            "(a rerun resumes from the last complete checkpoint)")


def stop_with_parent(poll_s: float = 1.0) -> None:
    """SIGTERM this agent (which then stops its workers, as on Ctrl-C) when the step that
    launched it dies: a SIGKILLed step (a timeout, the OOM killer) must not leave workers
    training on and writing `models/NAME/` behind a later run."""
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def main(argv: list[str]) -> int:
    """torchrun without restarts and without its failure report (the step reports it)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    # torchelastic logs each failure at ERROR on its own loggers (explicit levels, so the
    # parent's does not apply); the step reports the failure once, from the error files.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config, cmd, cmd_args = config_from_args(parse_args(argv))
    stop_with_parent()
    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
    except ChildFailedError as exc:
        # A worker that raised wrote its own one-line error (tunesmith.training.worker); one
        # that was killed could not: record how each failed worker ended, for the step.
        exits = {str(rank): failure.exitcode for rank, failure in exc.failures.items()}
        (Path(cmd_args[-1]) / "agent.json").write_text(json.dumps(exits), encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
