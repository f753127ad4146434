"""Peak CPU memory (RSS) of the train step per method: full vs lora vs head_only.

    python bench/memory_by_method.py [--steps 20] [--batch 32] [--quick]

Same setup as bench/train_throughput.py's `tunesmith` config (offline MiniLM, SST-2
subset, max_length 128, dynamic padding), `train.method` set per run. Each method runs in
its own subprocess so ru_maxrss is its own peak (model + optimizer state + activations +
the final save, which for LoRA includes the merge). Baseline: `full` fine-tuning.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("full", "lora", "head_only")


def child(method: str, rows: int, steps: int, batch: int) -> dict:
    """Train once with `method` via train_throughput's tunesmith setup; peak RSS in MiB."""
    spec = importlib.util.spec_from_file_location("bench_tt", HERE / "train_throughput.py")
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    with tempfile.TemporaryDirectory(prefix=f"bench-mem-{method}-") as tmp:
        out = tt.run_tunesmith(Path(tmp), rows, steps, batch, [f"train.method={method}"])
    return {"method": method, **out,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="64 rows, 2 steps, batch 4")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.steps, args.batch = 64, 2, 4
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.steps, args.batch)))
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    peaks = {}
    for method in METHODS:
        cmd = [sys.executable, __file__, "--child", method, "--rows", str(args.rows),
               "--steps", str(args.steps), "--batch", str(args.batch)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE.parent)
        if done.returncode != 0:
            raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
        res = json.loads(done.stdout.strip().splitlines()[-1])
        peaks[method] = res["peak_rss_mb"]
        print(f"{method:10} peak RSS {res['peak_rss_mb']:7.0f} MiB, "
              f"{res['samples_per_s']:.1f} samples/s ({res['steps']} steps)", flush=True)
    for method in METHODS[1:]:
        print(f"ratio {method} / full peak RSS: {peaks[method] / peaks['full']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
