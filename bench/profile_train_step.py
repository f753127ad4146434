"""Where a training step's time goes: py-spy over one train_throughput child, by phase.

    python bench/profile_train_step.py [--modes tunesmith grouped] [--rows 2048] [--batch 32]

Each mode runs `bench/train_throughput.py --child MODE` (one whole epoch by default) under
`py-spy record --format raw` at 200 Hz, and every sample of the main thread is put in the
first phase whose marker frame it contains (forward inside backward's recomputation does
not happen here: no gradient checkpointing). Phases: optimizer step, backward, forward
(incl. the loss), collate (the DataLoader fetch and the collator), callbacks, Trainer other
(the loop's own bookkeeping: logging, zero_grad, scheduler), clip_grad, eval/save (the
one evaluation and checkpoint at the end), set-up (imports, loading, the data) and other
threads.
Milliseconds per step = phase share x samples / steps.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATE = 200  # samples/s: 5 ms resolution on ~500 ms steps
# (phase, substrings of a frame "function (file:line)"), first match wins, outermost last.
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("eval/save", ("Trainer.evaluate (", "_save_checkpoint (", "_load_best_model (")),
    ("optimizer", ("AcceleratedOptimizer.step (", "(torch/optim/adam")),
    ("clip_grad", ("clip_grad_norm_ (",)),
    ("backward", ("Accelerator.backward (", "Tensor.backward (")),
    ("forward", ("compute_loss (",)),
    ("collate", ("DataLoader", "get_batch_samples (")),
    ("callbacks", ("CallbackHandler.call_event (",)),
    ("trainer other", ("_inner_training_loop (",)),
    ("set-up", ("child (",)),  # imports, loading, the data; and the main thread's
]                              # samples outside the loop. Other threads: "other threads"


def phase_of(stack: str) -> str:
    if "child (" not in stack:
        return "other threads"  # e.g. tqdm's monitor; torch's OpenMP workers are native
    if "Accelerator.free_memory (" in stack:
        return "set-up"  # once per train(): accelerate's gc.collect before the loop
    for phase, markers in PHASES:
        if any(m in stack for m in markers):
            return phase
    return "other"


def profile(mode: str, rows: int, batch: int, out_dir: Path) -> tuple[collections.Counter, int]:
    raw = out_dir / f"{mode}.txt"
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
           "--rate", str(RATE), "--output", str(raw), "--",
           sys.executable, str(REPO / "bench" / "train_throughput.py"), "--child", mode,
           "--rows", str(rows), "--batch", str(batch)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{mode}: py-spy failed:\n{done.stderr[-2000:]}")
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[phase_of(stack)] += int(n)
    steps = -(-rows // batch)  # one epoch
    return counts, steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["tunesmith", "grouped"])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    order = [p for p, _ in PHASES] + ["other threads"]
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        for mode in args.modes:
            counts, steps = profile(mode, args.rows, args.batch, Path(tmp))
            table[mode] = {p: counts[p] * 1000 / RATE / steps for p in order}
            total = sum(counts.values())
            print(f"{mode}: {total} samples ({total / RATE:.1f} s), {steps} steps", flush=True)
    print(f"\nms per step ({args.rows} rows, batch {args.batch}, one epoch; set-up and "
          "eval/save are per run, divided by the steps)")
    print("| phase | " + " | ".join(args.modes) + " |")
    print("| --- |" + " ---: |" * len(args.modes))
    for p in order:
        print(f"| {p} | " + " | ".join(f"{table[m][p]:.1f}" for m in args.modes) + " |")
    loop = [p for p in order if p not in ("set-up", "eval/save", "other threads")]
    print("| **step total** | " + " | ".join(
        f"**{sum(table[m][p] for p in loop):.1f}**" for m in args.modes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
