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
step, so they all launch this way. With `train.nodes` > 1 each node runs the step (node k's
only trains: tasks.runner) and failures cross nodes through the rendezvous store
(`NodePeers`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tunesmith import errors
from tunesmith.training.options import TrainOptions
from tunesmith.training.request import TrainRequest, TrainSummary

WORKER_MODULE = "tunesmith.training.worker"


def local_processes(opts: TrainOptions) -> int:
    """Worker processes on this node: `auto` is one per visible GPU, 1 without one."""
    if opts.processes != "auto":
        return int(opts.processes)
    import torch

    return max(1, torch.cuda.device_count())


def node_rank(opts: TrainOptions) -> int:
    """This node's index among `train.nodes`, as torchrun reads it (PET_NODE_RANK, default 0)."""
    if opts.nodes <= 1:
        return 0
    raw = os.environ.get("PET_NODE_RANK", "0")
    try:
        rank = int(raw)
    except ValueError:
        rank = -1
    if not 0 <= rank < opts.nodes:
        raise errors.ConfigError(f"PET_NODE_RANK={raw!r}: train.nodes={opts.nodes} numbers "
                                 f"the nodes 0..{opts.nodes - 1}")
    return rank


def is_launched(opts: TrainOptions) -> bool:
    """True when this step should launch workers: more than one process in all, and this
    process is not already one of torchrun's workers (then it trains itself, as under a
    hand-run `torchrun ... tunesmith step train`)."""
    return not inside_worker() and local_processes(opts) * opts.nodes > 1


def inside_worker() -> bool:
    """This process is one of torchrun's workers (launched by us or by hand)."""
    return "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


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


def launch(req: TrainRequest) -> TrainSummary:
    """Train `req` in torchrun-launched workers; rank 0's train summary.

    Raises the first failing rank's error as one line (its TunesmithError class when it was
    one, EnvironmentProblem otherwise)."""
    request_text = req.to_json()  # before any worker starts: refuses extra callbacks
    summary = Path(req.output_dir) / "train_summary.json"
    stamp = summary.stat().st_mtime_ns if summary.is_file() else None
    run_workers(req.options, request_text)
    if not summary.is_file() or summary.stat().st_mtime_ns == stamp:
        raise errors.EnvironmentProblem(f"{summary}: the launched workers exited 0 without "
                                        "writing it (rank 0 writes it after training)")
    return TrainSummary.read(summary)


@dataclasses.dataclass
class OtherNode:
    """The train step on node k > 0 of `train.nodes`: its workers trained, node 0 wrote."""

    node: int
    nodes: int
    ranks: str  # this node's global ranks, "2-3"
    outputs: str = "written by node 0"


def join(opts: TrainOptions) -> OtherNode:
    """Node k > 0: run this node's workers on node 0's request, which its launcher gets from
    the rendezvous store (`main`): every node trains node 0's settings and data, and this
    node needs no tokenized data of its own when its step starts (pod 0 may still be
    tokenizing; a `train.lr: auto` search may still be running there)."""
    run_workers(opts, None)
    n, node = local_processes(opts), node_rank(opts)
    return OtherNode(node=node, nodes=opts.nodes, ranks=f"{node * n}-{node * n + n - 1}")


def run_workers(opts: TrainOptions, request_text: str | None) -> None:
    """torchrun's agent for this node, in a child process, until its workers end."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="tunesmith-launch-") as tmp:
        request_json, error_dir = Path(tmp) / "request.json", Path(tmp) / "errors"
        error_dir.mkdir()
        request_json.write_text(request_text or "", encoding="utf-8")
        cmd = [sys.executable, "-m", __name__, *torchrun_args(opts, request_json, error_dir)]
        done = subprocess.run(cmd, env=worker_env(local_processes(opts)), check=False)
        if done.returncode != 0:
            raise first_error(error_dir, done.returncode)


def first_error(error_dir: Path, returncode: int) -> errors.TunesmithError:
    """The failure to report: a worker killed by a signal first (the others then fail on
    their closed connections to it), else the lowest rank's own error, as its class."""
    reports = rank_reports(error_dir)
    exits = agent_exits(error_dir / "agent.json")
    # SIGTERM is how the agent stops the other workers after the first failure: not a cause.
    killed = sorted(rank for rank, code in exits.items()
                    if code < 0 and code != -signal.SIGTERM and rank not in reports)
    # NodePeers: node 0 went away mid-run. This node's own ranks then fail on the closed
    # connections ("Connection reset by peer"): consequences, unless another node reported.
    lost = error_dir / "node-lost.json"
    if lost.is_file() and not killed and not any(r.get("remote") for r in reports.values()):
        return errors.EnvironmentProblem(json.loads(lost.read_text(encoding="utf-8"))["message"])
    if killed or not reports:
        return errors.EnvironmentProblem(killed_worker(killed, exits, returncode))
    first = reports[min(reports)]
    cls = getattr(errors, first["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, errors.TunesmithError)):
        cls = errors.EnvironmentProblem
    return cls(f"rank {first['rank']} of {first['world_size']}: {first['message']}")


def rank_reports(error_dir: Path) -> dict[int, dict]:
    """{rank: report} of the `rank-R.json` files the workers (and NodePeers) wrote."""
    reports = {}
    for path in error_dir.glob("rank-*.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        reports[int(report["rank"])] = report
    return reports


def agent_exits(agent_json: Path) -> dict[int, int]:
    """{rank: exit code} of the workers the agent saw fail (written by `main`)."""
    try:
        return {int(rank): int(code) for rank, code in
                json.loads(agent_json.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError):
        return {}


def killed_worker(killed: list[int], exits: dict[int, int], returncode: int) -> str:
    """The one line for a launch whose failing worker wrote no error of its own."""
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
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def main(argv: list[str]) -> int:
    """torchrun without restarts and without its failure report (the step reports it)."""
    # The agent's C++ warnings off (a store client's "Broken pipe" with 20 stack frames when
    # node 0 ends first); c10 reads the level once, at import. The workers keep the user's.
    user_level = os.environ.get("TORCH_CPP_LOG_LEVEL")
    os.environ["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    import torch  # noqa: F401 - c10 reads the level here

    if user_level is None:
        del os.environ["TORCH_CPP_LOG_LEVEL"]
    else:
        os.environ["TORCH_CPP_LOG_LEVEL"] = user_level
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    # torchelastic logs each failure at ERROR on its own loggers (explicit levels, so the
    # parent's does not apply); the step reports the failure once, from the error files.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = parse_args(argv)
    config, cmd, cmd_args = config_from_args(args)
    error_dir = Path(cmd_args[-1])
    stop_with_parent()
    peers = NodePeers(args.rdzv_endpoint, int(args.nnodes), int(args.node_rank), error_dir) \
        if args.rdzv_backend == "static" else None
    if peers is not None:
        request_json = Path(cmd_args[-2])
        if peers.node > 0 and not peers.take_request(request_json):
            return 1
        peers.watch(request_json if peers.node == 0 else None)
    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
    except ChildFailedError as exc:
        # A worker that raised wrote its own one-line error (tunesmith.training.worker); one
        # that was killed could not: record how each failed worker ended, for the step.
        exits = {str(rank): failure.exitcode for rank, failure in exc.failures.items()}
        (error_dir / "agent.json").write_text(json.dumps(exits), encoding="utf-8")
        if peers is not None:
            peers.publish(exits)
        return 1
    except SignalException:  # the step died, or another node failed (NodePeers)
        return 1
    finally:
        if peers is not None:
            peers.done.set()
    return 0


class NodePeers:
    """Failures across nodes, through the rendezvous store node 0's agent hosts.

    A node's agent sees only its own workers: when a rank on node 1 fails before joining
    the process group, node 0's ranks would wait for it until the group's timeout (30
    minutes). So an agent whose workers failed publishes their error reports under
    `tunesmith/failed/<node>`, and every agent polls the other nodes' keys: on one, it
    copies those reports into its error folder and stops its own workers (SIGTERM, as on
    Ctrl-C), so every node's step fails with the same first rank's line. The store going
    away (node 0's agent died) stops the other nodes the same way.
    """

    POLL_S = 1.0
    # How long node k > 0 waits for node 0's training to start: pod 0 runs ingest..tokenize
    # (and a `train.lr: auto` search) first; a failed pod 0 fails its Job, which stops the rest.
    JOIN_WAIT_S = 6 * 3600
    REQUEST_KEY = "tunesmith/request"

    def __init__(self, endpoint: str, nodes: int, node: int, error_dir: Path):
        self.endpoint, self.nodes, self.node, self.error_dir = endpoint, nodes, node, error_dir
        self.done = threading.Event()
        self._store = None

    def store(self, connect_s: float = 900):
        """A client of the store; the first call waits up to `connect_s` for node 0's agent
        (the watcher's: the rendezvous' own 15 minutes; after a failure: 10 s)."""
        if self._store is None:
            from datetime import timedelta

            from torch.distributed import TCPStore

            host, _, port = self.endpoint.rpartition(":")
            # A client that does not count as one of the rendezvous' nodes (wait_for_workers
            # False); it retries the connection while node 0's agent starts.
            self._store = TCPStore(host, int(port), is_master=False, wait_for_workers=False,
                                   timeout=timedelta(seconds=connect_s))
        return self._store

    def publish(self, exits: dict[str, int]) -> None:
        """Put this node's failed ranks' reports in the store; give the others time to read
        them (the store lives in node 0's agent), and take theirs (the lowest rank wins)."""
        reports = rank_reports(self.error_dir)
        try:
            self.store(connect_s=10).set(f"tunesmith/failed/{self.node}",
                                         json.dumps({"reports": reports, "exits": exits}))
            if self.node == 0:  # the store dies with this process: let the others poll it
                time.sleep(2 * self.POLL_S)
            self.collect()
        except Exception:  # noqa: BLE001 - node 0's store is gone: its step reports why
            self.lost()

    def collect(self) -> bool:
        """Copy the other nodes' published reports into the error folder; True if any."""
        found = False
        for other in range(self.nodes):
            key = f"tunesmith/failed/{other}"
            if other == self.node or not self.store().check([key]):
                continue
            published = json.loads(self.store().get(key))
            for rank, report in published["reports"].items():
                target = self.error_dir / f"rank-{rank}.json"
                if not target.exists():
                    target.write_text(json.dumps(report | {"remote": True}), encoding="utf-8")
            # How its failed workers ended (a killed one has no report of its own).
            exits = agent_exits(self.error_dir / "agent.json") | {
                int(rank): code for rank, code in published["exits"].items()}
            (self.error_dir / "agent.json").write_text(json.dumps(exits), encoding="utf-8")
            found = True
        return found

    def take_request(self, request_json: Path) -> bool:
        """Node k > 0: node 0's request into `request_json` (waits for node 0's launcher)."""
        try:
            request_json.write_bytes(self.store(connect_s=self.JOIN_WAIT_S).get(self.REQUEST_KEY))
        except Exception:  # noqa: BLE001 - the wait ran out, or node 0 went away meanwhile
            self.lost(f"node 0's training at {self.endpoint} did not start within "
                      f"{self.JOIN_WAIT_S // 3600} h, or its launcher went away")
            return False
        return True

    def lost(self, message: str = "") -> None:
        message = message or f"node 0's launcher at {self.endpoint} went away (its step " \
                             "reports why)"
        (self.error_dir / "node-lost.json").write_text(json.dumps({"message": message}),
                                                        encoding="utf-8")

    def watch(self, request_json: Path | None) -> None:
        """Poll the other nodes' failures in a thread; node 0 first publishes its request."""
        def loop() -> None:
            try:
                if request_json is not None:
                    self.store().set(self.REQUEST_KEY, request_json.read_bytes())
                while not self.done.wait(self.POLL_S):
                    if self.collect():
                        break
                else:
                    return
            except Exception:  # noqa: BLE001 - the store's host, node 0's agent, is gone
                if self.done.wait(2 * self.POLL_S):
                    return  # it ended after a success: the exit barrier had passed
                self.lost()
            if not self.done.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=loop, name="node-peers", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
