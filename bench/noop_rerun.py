"""No-op reruns: `dvc repro` and `tunesmith run` when nothing changed, vs their cold runs.

    python bench/noop_rerun.py [--repeats 3] [--quick]

A temporary git + DVC repository set up like tests/test_dvc_repro.py: the repo's dvc.yaml,
params.yaml, tasks/ and tunesmith/, the bundled sms_spam sample (400 rows) trained one
epoch on a tiny BERT (2 layers, hidden 32, MiniLM's tokenizer) so the cold run is short.
Baseline: the same command's first (cold) run. Targets (issue 6): no-op `dvc repro` < 5 s,
no-op `tunesmith run` < 20 s, each timed as a whole subprocess.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
NAME = "sms_spam"
TARGETS = {"dvc repro": 5.0, "tunesmith run": 20.0}


def tiny_model(out: Path) -> Path:
    """A ~1M-parameter BERT with MiniLM's tokenizer: real code paths, seconds to train."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tunesmith.models import resolve_base

    tok = AutoTokenizer.from_pretrained(resolve_base("all-MiniLM-L6-v2"))
    tok.save_pretrained(out)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=2)
    BertForSequenceClassification(config).save_pretrained(out)
    return out


def make_repo(repo: Path, model: Path) -> None:
    """Copy the pipeline into a fresh git repo with DVC initialised; one dataset."""
    repo.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    for code_dir in ("tasks", "tunesmith", "flows"):
        shutil.copytree(REPO / code_dir, repo / code_dir,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "datasets").mkdir()
    (repo / "data" / "samples").mkdir(parents=True)
    shutil.copy(REPO / "data" / "samples" / f"{NAME}.csv", repo / "data" / "samples")
    spec = yaml.safe_load((REPO / "datasets" / f"{NAME}.yaml").read_text())
    spec["model"] = {"base": str(model)}
    spec["train"] = {**spec.get("train", {}), "epochs": 1, "lr": 5e-3}
    spec["register"] = {"thresholds": {"f1_macro": 0.0}}  # a tiny model must not fail the gate
    spec["evaluate"] = {"latency_examples": 2}
    (repo / "datasets" / f"{NAME}.yaml").write_text(yaml.safe_dump(spec))
    (repo / ".gitignore").write_text(".prefect/\nmlflow.db\nmlartifacts/\n.tunesmith/\n")
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["tunesmith", "dvc-yaml"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        sh(args, repo)


def _children_cpu() -> float:
    """CPU seconds of finished child processes (and their children): robust to load."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def sh(args: list[str], cwd: Path) -> tuple[float, str]:
    """Run a command; (wall seconds, output). Exits on failure with the output's tail."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PREFECT_HOME": str(cwd / ".prefect"),
           # Prefect's ephemeral API gives up after 20 s by default; on a loaded 2-core box
           # its start alone took longer (docs/benchmarks.md), failing the whole run.
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": os.environ.get(
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")}
    env.pop("TUNESMITH_ROOT", None)
    t0 = time.perf_counter()
    c0 = _children_cpu()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(f"  {' '.join(args)}: {wall:.1f}s wall, {_children_cpu() - c0:.1f} CPU-s", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="no-op reruns per command")
    ap.add_argument("--quick", action="store_true", help="dvc repro only, one no-op rerun")
    ap.add_argument("--only", choices=("dvc", "run"), help="time just one of the two commands")
    args = ap.parse_args(argv)
    commands = {"dvc repro": ["dvc", "repro"],
                "tunesmith run": ["tunesmith", "run", "--dataset", NAME]}
    if args.quick:
        args.repeats, commands = 1, {"dvc repro": commands["dvc repro"]}
    if args.only:
        commands = {k: v for k, v in commands.items() if args.only in k.split()}

    with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo, tiny_model(Path(tmp) / "tiny-bert"))
        results = {}
        for label, cmd in commands.items():
            cold, out = sh(cmd, repo)
            warm = [sh(cmd, repo)[0] for _ in range(args.repeats)]
            results[label] = (cold, warm)
            ran = len(re.findall(r"Running stage", out))
            print(f"{label:14} cold {cold:6.1f}s ({ran} dvc stages ran) | no-op "
                  + " ".join(f"{w:.1f}s" for w in warm), flush=True)
    print(f"\nload avg {os.getloadavg()[0]:.1f}")
    for label, (cold, warm) in results.items():
        med = statistics.median(warm)
        verdict = "met" if med < TARGETS[label] else "MISSED"
        print(f"{label:14} no-op median {med:.1f}s (target < {TARGETS[label]:.0f}s: {verdict}); "
              f"cold {cold:.1f}s; ratio cold / no-op {cold / med:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
