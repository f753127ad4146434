"""The launcher's cost: the train step in 2 launched processes vs 1, same global batch, CPU.

    python bench/launch_throughput.py [--rows 2048] [--batch 32] [--repeats 3] [--quick]

Same data and model as bench/train_throughput.py (offline all-MiniLM-L6-v2, a seeded SST-2
sample, one whole epoch, max_length 128). Each run is `tasks.train.train(cfg)`, the train
step itself, in its own subprocess:
  one  train.processes=1, batch_size=BATCH: trains in the step's process (2 torch threads)
  two  train.processes=2, batch_size=BATCH/2: the step launches 2 gloo workers through
       torch.distributed.run (1 thread each, OMP_NUM_THREADS set by the launcher)
Reported: the step's wall time (for `two` it includes the launcher and both workers'
start-up and model loading), and the Trainer's own samples/s over the training loop (rank 0;
global samples). Configs interleaved per repeat; medians. On 2 cores, DDP can at best match
one process using both cores: the ratio is the launcher + gloo all-reduce overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODES = ("one", "two")


def child(mode: str, rows: int, batch: int) -> dict:
    from train_throughput import write_project  # bench/, this script's folder, is on sys.path

    from tunesmith.tasks.train import train

    processes = 1 if mode == "one" else 2
    with tempfile.TemporaryDirectory(prefix=f"bench-launch-{mode}-") as tmp:
        cfg = write_project(Path(tmp), rows, -1, batch // processes,
                            [f"train.processes={processes}", "train.early_stopping_patience=0"])
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
        summary = json.loads((cfg.dirs.model / "train_summary.json").read_text())
    return {"mode": mode, "step_wall_s": wall, "samples_per_s": summary["samples_per_s"],
            "world_size": summary["world_size"], "steps": summary["steps"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="64 rows, batch 8, 1 repeat")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.batch, args.repeats = 64, 8, 1
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.batch)))
        return 0
    from train_throughput import run_child  # bench/, this script's folder, is on sys.path

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for rep in range(args.repeats):
        for mode in MODES:
            res = run_child(__file__, mode, ["--rows", str(args.rows), "--batch",
                                             str(args.batch)])
            runs[mode].append(res)
            print(f"repeat {rep + 1} {mode}: step {res['step_wall_s']:.1f} s, "
                  f"{res['samples_per_s']:.1f} samples/s (world {res['world_size']}, "
                  f"{res['steps']} steps)", flush=True)
    med = {m: {k: statistics.median(r[k] for r in runs[m])
               for k in ("step_wall_s", "samples_per_s")} for m in MODES}
    print(f"\n{args.rows} rows, one epoch, global batch {args.batch}, median of {args.repeats}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    for m in MODES:
        print(f"{m}: step {med[m]['step_wall_s']:.1f} s, {med[m]['samples_per_s']:.1f} samples/s")
    print(f"two / one: {med['two']['samples_per_s'] / med['one']['samples_per_s']:.2f}x "
          f"samples/s, {med['two']['step_wall_s'] / med['one']['step_wall_s']:.2f}x step wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
