"""The training loop alone vs with Prefect's temporary API running beside it.

    python bench/server_interference.py [--rows 5000] [--steps 100] [--repeats 3] [--quick]

Why: in bench/pipeline_overhead.py the training loop ran ~2% slower inside `tunesmith run`
than as a bare process in some rounds (docs/benchmarks.md section 3; on 2026-12-02 this
script ruled the server out: 0.964x). This isolates that suspect: the
temporary Prefect API server that `tunesmith run` starts (tunesmith.prefect_env), idle
while training runs but for its own timers (SCHED_IDLE after boot, as in the flow).

A temp project with one dataset (a seeded SST-2 sample, offline MiniLM, full fine-tuning)
is made and tokenized once with `tunesmith step`. Then, in alternating order (A B B A ...),
a fresh process trains `--steps` steps with the bare training function
(`train_model(build_request(cfg))`, no evaluation) and reports the loop's wall time
(train_summary's wall_time_s) and the process's involuntary context switches (the kernel
took a core from one of its threads):
  alone     nothing else started;
  with API  the same process first starts the temporary API exactly as `tunesmith run`
            does (start_local_api + wait_for_local_api), waits 10 s (in the flow,
            training starts at least that long after the API answers) and trains
            while it runs.
Prints each run, the medians, and the ratio with API / alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline_overhead as po  # noqa: E402 - the same project and data as the overhead bench

# Run before the bare training code in the "api" condition, in the same process.
START_API = """
import time
from pathlib import Path
from tunesmith.prefect_env import configure, start_local_api, wait_for_local_api
configure(Path.cwd())
start_local_api()
wait_for_local_api()
time.sleep(10)  # in the flow, training starts >= 10 s after the API answers
"""


def one_run(root: Path, condition: str, steps: int) -> dict:
    timing = po.bare_run(root, (f"train.max_steps={steps}", "train.eval_every_steps=100000"),
                         START_API if condition == "api" else "")
    return {"loop_s": timing["bare_train_loop_s"], "involuntary": timing["involuntary"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000, help="SST-2 rows in the dataset")
    ap.add_argument("--steps", type=int, default=100, help="training steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per condition")
    ap.add_argument("--quick", action="store_true", help="tiny model, 200 rows, 5 steps, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.steps, args.repeats = 200, 5, 1
    runs: dict[str, list[dict]] = {"alone": [], "api": []}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        root = Path(tmp)
        po.make_project(root, args.quick)
        po.write_data(root, args.rows, 0, args.quick)
        for step in ("ingest", "clean", "validate", "tokenize"):
            done = subprocess.run(["tunesmith", "step", step, "--dataset", po.NAME], cwd=root,
                                  env=po.env_for(root), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"step {step} failed:\n{done.stderr[-2000:]}")
        # A B B A A B ...: a drift of the VM's speed over the session hits both alike.
        order = [("alone", "api") if i % 2 == 0 else ("api", "alone")
                 for i in range(args.repeats)]
        for condition in (c for pair in order for c in pair):
            result = one_run(root, condition, args.steps)
            runs[condition].append(result)
            print(f"{condition:5}: loop {result['loop_s']:6.2f}s, involuntary context switches "
                  f"{result['involuntary']}", flush=True)
    med = {c: statistics.median(r["loop_s"] for r in rs) for c, rs in runs.items()}
    switches = {c: statistics.median(r["involuntary"] for r in rs) for c, rs in runs.items()}
    print(f"\nmedians over {args.repeats}: alone {med['alone']:.2f}s "
          f"({switches['alone']:.0f} switches), with API {med['api']:.2f}s "
          f"({switches['api']:.0f}); with API / alone {med['api'] / med['alone']:.3f}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
