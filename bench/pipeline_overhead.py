"""Pipeline overhead: `tunesmith run` on a dataset vs the bare training function alone.

    python bench/pipeline_overhead.py [--rows 6500] [--epochs N] [--repeats 3] [--quick]

A temp project with one dataset: a seeded sample of SST-2 train.tsv (`--rows` rows; 80% of
them are the train split), offline all-MiniLM-L6-v2, `train.method=full` and otherwise the
project's defaults (3 epochs, batch 32) unless `--epochs` is given. After
one untimed-for-the-median first run (it also creates the project's Prefect and MLflow
databases), each repeat writes a new sample (a new data version, so every step re-runs and
the champion is re-scored) and times:
  tunesmith  `tunesmith run --dataset sst` as a subprocess, timed whole: Python start,
             the Prefect ephemeral API, ingest, clean, validate (GX), tokenize, train,
             evaluate (TF-IDF baseline, latency, plots, MLflow model logging), register.
  bare       a subprocess calling only `train_model(build_request(cfg))` (what
             `tasks.train.train` does) on the tokenized splits of the last flow run, timed
             around the call (`bare fn`) and as a whole process (`bare process`). It runs
             after the flow in the first run and in even repeats, before it in odd ones
             (on the previous version's splits, same row count): flow, bare | bare, flow
             | flow, bare ..., so a drift of the VM's speed favours neither side.
Overhead = tunesmith wall - bare process wall (both whole commands: Python start, imports,
model loading, training), in seconds and as a share of the tunesmith wall. Also printed
against the bare fn alone (the call, without the ~7 s of torch/transformers imports that
any training script pays). Target (issue 6): under 10% when training takes at least 2
minutes. The run log's task timestamps split the overhead by step.

On a shared VM the training loop itself (~2 min) drifts by up to 10% between two runs a
minute apart, which swamps a ~15 s overhead. So each repeat is also split into the time
outside the training loop (wall - train_summary's wall_time_s, for the run and for the bare
process: start-up, imports, data steps, evaluate, register) and the loop's own ratio, flow
over bare. The estimate = the median outside-loop difference + (median loop ratio - 1, if
positive) x the bare loop; the target verdict uses it, with the direct difference beside it,
and is given only when the bare loop's median is at least 2 minutes, the target's
condition (at 5,000 rows it was 102-130 s depending on the day: use more rows on a fast day).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
NAME = "sst"
MIN_TRAINING_S = 120.0  # the target is stated for trainings of at least 2 minutes
STEPS = ("ingest", "clean", "validate", "tokenize", "train", "evaluate", "register")

# Extra overrides come as arguments; `involuntary`: the process's involuntary context
# switches (the kernel took a core from one of its threads), -1 off Linux.
BARE = """
import glob, json, sys, time
t0 = time.perf_counter()
from tunesmith.train_request import build_request
from tunesmith.config import load_config
from tunesmith.training.run import train_model
cfg = load_config("sst", overrides=["paths.models=bare_models", "paths.state=.bare_state",
                                    *sys.argv[1:]])
t1 = time.perf_counter()
summary = train_model(build_request(cfg))
t2 = time.perf_counter()
tasks = glob.glob("/proc/self/task/*/status")
switches = sum(int(open(t).read().split("nonvoluntary_ctxt_switches:")[1].split()[0])
               for t in tasks) if tasks else -1
print(json.dumps({"import_s": t1 - t0, "fn_s": t2 - t1, "steps": summary.steps,
                  "train_loop_s": summary.wall_time_s, "involuntary": switches}))
"""


def write_data(root: Path, rows: int, seed: int, quick: bool) -> None:
    """A seeded SST-2 sample as the dataset's source: each seed is a new data version."""
    import pandas as pd

    if (SST2 / "train.tsv").is_file() and not quick:
        df = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype={"sentence": str})
        df = df.rename(columns={"sentence": "text"}).sample(rows, random_state=seed)
    else:  # smoke runs without the shared data
        words = ["a good film", "a bad film", "quite dull", "really moving and warm"]
        df = pd.DataFrame({"text": [f"{words[i % 4]} {i} {seed}" for i in range(rows)],
                           "label": [int(i % 4 in (0, 3)) for i in range(rows)]})
    df[["text", "label"]].to_csv(root / "data" / "sst.csv", index=False)


def make_project(root: Path, quick: bool, epochs: float | None = None) -> None:
    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "datasets" / "sst.yaml").write_text(
        "source: {path: data/sst.csv}\ncolumns: {text: text, label: label}\n"
        "labels: [negative, positive]\nlabel_map: {0: negative, 1: positive}\n"
        "train: {method: full" + (f", epochs: {epochs}" if epochs else "") + "}\n"
        "register: {thresholds: {f1_macro: 0.0}, require_beat_baseline: false}\n"
        + ("model: {base: " + str(root / "tiny") + "}\n" if quick else ""),
        encoding="utf-8")
    if quick:
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from tunesmith.models import resolve_base

        tok = AutoTokenizer.from_pretrained(resolve_base("all-MiniLM-L6-v2"))
        tok.save_pretrained(root / "tiny")
        BertForSequenceClassification(BertConfig(
            vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, num_labels=2,
        )).save_pretrained(root / "tiny")


def env_for(root: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TUNESMITH_ROOT": str(root), "PREFECT_HOME": str(root / ".prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def step_seconds(log: str, started: datetime, ended: datetime) -> dict[str, float]:
    """Seconds per phase from the flow log's timestamps: start-up (Python, imports, the
    ephemeral Prefect API) until the flow begins, each step, and shutdown after the last."""
    begin = re.search(r"^(\d\d:\d\d:\d\d\.\d+) .*Beginning flow run", log, re.M)
    if begin is None:
        return {}

    def at(stamp: str) -> datetime:
        return datetime.combine(started.date(), datetime.strptime(stamp, "%H:%M:%S.%f").time())

    prev = at(begin.group(1))
    out = {"startup": round((prev - started).total_seconds(), 1)}
    for stamp, step in re.findall(r"^(\d\d:\d\d:\d\d\.\d+) .*Task run '(\w+)-sst' - Finished",
                                  log, re.M):
        now = at(stamp)
        out[step] = round((now - prev).total_seconds(), 1)
        prev = now
    out["shutdown"] = round((ended - prev).total_seconds(), 1)
    return out


def flow_run(root: Path) -> dict:
    """`tunesmith run` on the project's current data, timed whole."""
    t0, started = time.perf_counter(), datetime.now()
    run = subprocess.run(["tunesmith", "run", "--dataset", NAME], cwd=root, env=env_for(root),
                         capture_output=True, text=True)
    run_wall, ended = time.perf_counter() - t0, datetime.now()
    if run.returncode != 0:
        raise SystemExit(f"tunesmith run failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    trained = json.loads((root / "models" / NAME / "train_summary.json").read_text())
    return {"run_wall_s": run_wall, "resumed": trained.get("resumed_from") is not None,
            "flow_train_loop_s": trained.get("wall_time_s"),
            "steps": step_seconds(run.stdout + run.stderr, started, ended)}


def bare_run(root: Path, overrides: tuple[str, ...] = (), before: str = "") -> dict:
    """The bare training function on the tokenized data the last flow run produced, with
    `overrides`, after running the code `before` in the same process."""
    for leftover in ("bare_models", ".bare_state"):  # no resuming the previous bare run
        shutil.rmtree(root / leftover, ignore_errors=True)
    t0 = time.perf_counter()
    bare = subprocess.run([sys.executable, "-c", before + BARE, *overrides], cwd=root,
                          env=env_for(root), capture_output=True, text=True)
    bare_process = time.perf_counter() - t0
    if bare.returncode != 0:
        raise SystemExit(f"bare training failed:\n{bare.stderr[-2000:]}")
    timing = json.loads(bare.stdout.strip().splitlines()[-1])
    return {"bare_fn_s": timing["fn_s"], "bare_process_s": bare_process,
            "bare_import_s": timing["import_s"], "bare_train_loop_s": timing.get("train_loop_s"),
            "involuntary": timing["involuntary"]}


def repeat(root: Path, rows: int, seed: int, quick: bool, bare_first: bool) -> dict:
    """A new data version and one flow run, with one bare run before or after it. Before, the
    bare process trains on the previous version's tokenized splits (same row count), so
    the order alternates (flow, bare, bare, flow, ...) and a drift of the VM's speed within
    a repeat does not always land on the same side."""
    if bare_first:
        bare = bare_run(root)
    write_data(root, rows, seed, quick)
    flow = flow_run(root)
    if not bare_first:
        bare = bare_run(root)
    return {**flow, **bare, "bare_first": bare_first}


def report(label: str, r: dict) -> None:
    over = r["run_wall_s"] - r["bare_process_s"]
    over_fn = r["run_wall_s"] - r["bare_fn_s"]
    order = "bare first" if r["bare_first"] else "flow first"
    print(f"{label} ({order}): tunesmith run {r['run_wall_s']:.1f}s | bare process "
          f"{r['bare_process_s']:.1f}s (fn {r['bare_fn_s']:.1f}s) | overhead {over:.1f}s"
          f" ({over / r['run_wall_s']:.1%}; vs fn {over_fn:.1f}s, {over_fn / r['run_wall_s']:.1%})"
          f" | training loop in the flow {r['flow_train_loop_s'] or float('nan'):.1f}s vs bare"
          f" {r['bare_train_loop_s'] or float('nan'):.1f}s"
          f" | steps {r['steps']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6500,
                    help="SST-2 rows in the dataset (6,500: ~2 minutes of training here)")
    ap.add_argument("--epochs", type=float, default=None,
                    help="train.epochs (default: the project's, 3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny model, 200 rows, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 200, 1
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        root = Path(tmp)
        make_project(root, args.quick, args.epochs)
        # The first run in a new project also creates .prefect/ and mlflow.db (migrations);
        # reported, not counted. The timed runs are what a nightly retrain sees: new data
        # (another seeded sample) in a project that has run before, a champion to re-score.
        report("first run, new project", repeat(root, args.rows, 0, args.quick, False))
        for i in range(args.repeats):
            results.append(repeat(root, args.rows, i + 1, args.quick, bare_first=i % 2 == 0))
            report(f"repeat {i + 1}", results[-1])
    med = {key: statistics.median(r[key] for r in results)
           for key in ("run_wall_s", "bare_process_s", "bare_fn_s")}
    over, over_fn = med["run_wall_s"] - med["bare_process_s"], med["run_wall_s"] - med["bare_fn_s"]
    print(f"\nmedians over {len(results)}: tunesmith run {med['run_wall_s']:.1f}s, bare process "
          f"{med['bare_process_s']:.1f}s (bare fn {med['bare_fn_s']:.1f}s); direct overhead "
          f"{over:.1f}s = {over / med['run_wall_s']:.1%} of the run; vs the bare fn alone "
          f"{over_fn:.1f}s = {over_fn / med['run_wall_s']:.1%}")
    split = [r for r in results if r["flow_train_loop_s"] and r["bare_train_loop_s"]]
    if split:
        outside = statistics.median((r["run_wall_s"] - r["flow_train_loop_s"])
                                    - (r["bare_process_s"] - r["bare_train_loop_s"]) for r in split)
        ratio = statistics.median(r["flow_train_loop_s"] / r["bare_train_loop_s"] for r in split)
        loop = statistics.median(r["bare_train_loop_s"] for r in split)
        # A ratio below 1 is the machine drifting, not the flow training faster: not credited.
        estimate = outside + max(0.0, ratio - 1) * loop
        share = estimate / med["run_wall_s"]
        # The target holds for trainings of 2 minutes or more; a shorter one (a faster VM
        # day, fewer rows) says nothing either way about it.
        ratios = ", ".join(f"{r['flow_train_loop_s'] / r['bare_train_loop_s']:.3f}"
                           for r in split)
        verdict = (("met" if share < 0.10 else "MISSED") if loop >= MIN_TRAINING_S else
                   f"not judged: the bare loop took {loop:.0f} s < {MIN_TRAINING_S:.0f} s, "
                   "use more --rows")
        print(f"outside the training loop: {outside:.1f}s more than the bare process "
              f"({outside / med['run_wall_s']:.1%} of the run); training loop flow/bare "
              f"{ratio:.3f} (each repeat: {ratios}); estimated overhead {estimate:.1f}s = "
              f"{share:.1%} (target < 10% with "
              f">= {MIN_TRAINING_S:.0f} s training: {verdict})")
    for step in ("startup", *STEPS, "shutdown"):
        vals = [r["steps"].get(step) for r in results if r["steps"].get(step) is not None]
        if vals:
            print(f"  {step:9} median {statistics.median(vals):6.1f}s (from the flow log)")
    print(f"load avg {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
