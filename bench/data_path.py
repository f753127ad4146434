"""Data path throughput: ingest + clean + validate + tokenize on ~1M rows, vs a bare script.

    python bench/data_path.py [--rows 1000000] [--repeats 3] [--quick]

Data: SST-2 train.tsv (67,349 rows) repeated, copy k with the suffix " (r{k})" so that
de-duplication keeps the copies apart. Each step runs in its own subprocess (so its peak
RSS is its own, and imports are counted separately from the step itself), under the garbage
collector settings `tunesmith step` uses (tunesmith/gcpolicy.py), in a temporary tunesmith
project built from the repo's params.yaml. `SST2_DIR` overrides where SST-2 is looked for
(beside the repo: `../shared/data/sst2`; a git worktree elsewhere needs it).

Baseline ("bare script"): what a user would write by hand for the same result, with no
reports, no validation suite and no on-disk contract: pandas read_csv, NFKC + whitespace
normalisation, drop_duplicates, a seeded random 80/10/10 split, the same fast tokenizer
in batches of 2,000, parquet out. Printed ratio: tunesmith step time / bare script time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
STEPS = ("ingest", "clean", "validate", "tokenize")
NAME = "big"
TARGET_S = 120.0  # issue 6: the four steps together under 2 minutes on 2 CPU cores


def make_source(path: Path, rows: int) -> int:
    """Write `rows` rows of SST-2 repeated with per-copy suffixes; returns the row count."""
    import pandas as pd

    if (SST2 / "train.tsv").is_file():
        base = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype=str)
    else:  # --quick without the shared data: synthetic rows, still two labels
        base = pd.DataFrame({"label": ["0", "1"] * 50,
                             "sentence": [f"a {'good' if i % 2 else 'bad'} film {i}"
                                          for i in range(100)]})
    copies = -(-rows // len(base))
    parts = [base.assign(sentence=base["sentence"] + f" (r{k})") if k else base
             for k in range(copies)]
    frame = pd.concat(parts, ignore_index=True).head(rows)
    frame.to_csv(path, sep="\t", index=False, quoting=3)
    return len(frame)


def make_project(root: Path, rows: int) -> None:
    """A tunesmith project with one dataset `big` reading data/big.tsv."""
    (root / "datasets").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    make_source(root / "data" / f"{NAME}.tsv", rows)
    (root / "datasets" / f"{NAME}.yaml").write_text(
        f"""source: {{path: data/{NAME}.tsv}}
columns: {{text: sentence, label: label}}
labels: [negative, positive]
label_map: {{"0": negative, "1": positive}}
""", encoding="utf-8")


def reset_outputs(root: Path) -> None:
    """Remove every step output so the next repeat starts cold (tokenize caches by digest)."""
    for sub in ("data/raw", "data/clean", "data/tokenized", "reports", ".tunesmith"):
        shutil.rmtree(root / sub, ignore_errors=True)


# ------------------------------------------------------------------ child processes


def cpu_s() -> float:
    """User + system CPU seconds of this process (all threads): robust to a shared machine."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def child(step: str, root: Path) -> dict:
    """Run one step in this process; wall and CPU times and peak RSS as a dict."""
    t0 = time.perf_counter()
    if step == "bare":
        return _bare(root, t0)  # a user's script: CPython's collector settings
    from tunesmith import gcpolicy

    with gcpolicy.pipeline_thresholds():  # as `tunesmith step` (so `dvc repro`) runs them
        return _tracking(root, t0) if step == "tracking" else _step(step, root, t0)


def _step(step: str, root: Path, t0: float) -> dict:
    import importlib

    from tunesmith.config import load_config

    func = getattr(importlib.import_module(f"tunesmith.tasks.{step}"), step)
    cfg = load_config(NAME, root)
    t1, c1 = time.perf_counter(), cpu_s()
    result = func(cfg, raise_on_failure=False) if step == "validate" else func(cfg)
    t2, c2 = time.perf_counter(), cpu_s()
    from tunesmith import logged as L
    from tunesmith.steps import output_dir

    L.write(result.logged, output_dir(cfg, step))  # what the runner keeps for the tracking row
    extra = {"success": result.success, "n_failed": result.n_failed} if step == "validate" else {}
    return {"step": step, "import_s": t1 - t0, "step_s": t2 - t1, "cpu_s": c2 - c1, **extra,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _tracking(root: Path, t0: float) -> dict:
    """What `tunesmith step` (so `dvc repro` and the flow) adds to the four step functions:
    opening the pipeline's MLflow run and logging each step's outputs to it."""
    from tunesmith import logged as L
    from tunesmith import tracking
    from tunesmith.config import load_config
    from tunesmith.steps import output_dir

    cfg = load_config(NAME, root)
    t1, c1 = time.perf_counter(), cpu_s()
    with tracking.pipeline_run(cfg, "ingest") as run:  # the steps' records, as the runner logs
        for step in STEPS:
            run.log(L.read(output_dir(cfg, step)) or L.Logged())
    tracking.finish(cfg, "FINISHED")
    t2, c2 = time.perf_counter(), cpu_s()
    return {"step": "tracking", "import_s": t1 - t0, "step_s": t2 - t1, "cpu_s": c2 - c1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _bare(root: Path, t0: float) -> dict:
    """The baseline: a hand-written clean + split + tokenize with pandas and the fast tokenizer."""
    import numpy as np
    import pandas as pd
    from transformers import AutoTokenizer

    from tunesmith.models import resolve_base

    tok = AutoTokenizer.from_pretrained(resolve_base("all-MiniLM-L6-v2"))
    t1, c1 = time.perf_counter(), cpu_s()
    df = pd.read_csv(root / "data" / f"{NAME}.tsv", sep="\t", quoting=3, dtype=str)
    df["sentence"] = df["sentence"].str.normalize("NFKC").str.split().str.join(" ")
    df = df[df["sentence"] != ""].drop_duplicates("sentence")
    split = np.random.default_rng(42).choice(3, size=len(df), p=[0.8, 0.1, 0.1])
    out = root / "bare"
    out.mkdir(exist_ok=True)
    texts = df["sentence"].tolist()
    ids: list[list[int]] = []
    for start in range(0, len(texts), 2000):
        ids.extend(tok(texts[start:start + 2000], truncation=True, max_length=128)["input_ids"])
    df = df.assign(input_ids=ids, labels=df["label"].astype("int64"), split=split)
    for i, name in enumerate(("train", "val", "test")):
        df.loc[df["split"] == i, ["input_ids", "labels"]].to_parquet(out / f"{name}.parquet")
    t2, c2 = time.perf_counter(), cpu_s()
    return {"step": "bare", "import_s": t1 - t0, "step_s": t2 - t1, "cpu_s": c2 - c1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(step: str, root: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", step, "--root", str(root)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 rows, one repeat (smoke test)")
    ap.add_argument("--keep", type=Path, help="build the project here and keep it")
    ap.add_argument("--json", type=Path, help="also write all measurements here")
    ap.add_argument("--child", choices=(*STEPS, "bare", "tracking"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.root)))
        return 0
    if args.quick:
        args.rows, args.repeats = 2_000, 1

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-data-")
    root = args.keep or Path(tmp.name) / "proj"
    make_project(root, args.rows)
    runs: list[dict[str, dict]] = []
    for rep in range(args.repeats):
        reset_outputs(root)
        shutil.rmtree(root / "bare", ignore_errors=True)
        # Interleave: the bare script first, then the four steps, on the same cold files.
        run = {"bare": run_child("bare", root)}
        for step in STEPS:
            run[step] = run_child(step, root)
        # A new project's tracking store each time: the first run pays its creation too.
        (root / "mlflow.db").unlink(missing_ok=True)
        (root / ".tunesmith" / NAME / "mlflow_run.json").unlink(missing_ok=True)
        run["tracking"] = run_child("tracking", root)
        runs.append(run)
        total = sum(run[s]["step_s"] for s in STEPS)
        bare = run["bare"]["step_s"]
        print(f"repeat {rep + 1}: steps {total:.1f}s, bare {bare:.1f}s", flush=True)

    rows = args.rows
    keys = (*STEPS, "bare", "tracking")
    med = {k: statistics.median(r[k]["step_s"] for r in runs) for k in keys}
    proc = {k: statistics.median(r[k]["process_s"] for r in runs) for k in keys}
    cpu = {k: statistics.median(r[k]["cpu_s"] for r in runs) for k in keys}
    rss = {k: max(r[k]["peak_rss_mb"] for r in runs) for k in keys}
    print(f"\n{rows:,} rows, {args.repeats} repeat(s), medians; load avg {os.getloadavg()[0]:.1f}")
    print(f"{'step':10} {'step s':>8} {'rows/s':>10} {'cpu s':>8} {'process s':>10} {'RSS MB':>8}")
    for k in keys:
        print(f"{k:10} {med[k]:8.1f} {rows / med[k]:10,.0f} {cpu[k]:8.1f} {proc[k]:10.1f} "
              f"{rss[k]:8.0f}")
    total = sum(med[s] for s in STEPS)
    total_proc = sum(proc[s] for s in STEPS)
    total_cpu = sum(cpu[s] for s in STEPS)
    print(f"{'4 steps':10} {total:8.1f} {rows / total:10,.0f} {total_cpu:8.1f} {total_proc:10.1f}")
    verdict = "met" if total_proc < TARGET_S else "MISSED"
    print(f"target: 4 steps < {TARGET_S:.0f}s incl. process start -> {total_proc:.1f}s ({verdict})")
    print(f"ratio tunesmith(4 steps) / bare script: {total / med['bare']:.2f}x wall, "
          f"{total_cpu / cpu['bare']:.2f}x CPU")
    print(f"MLflow logging of the 4 steps' outputs (tunesmith step / dvc repro): "
          f"{med['tracking']:.1f}s, {proc['tracking']:.1f}s as its own process")
    if "validate" in runs[-1]:
        print(f"validate success={runs[-1]['validate'].get('success')}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": runs}, indent=1))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
