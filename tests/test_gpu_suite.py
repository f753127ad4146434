"""bench/gpu_suite.py --smoke: the GPU suite's every case on tiny sizes on CPU (qlora needs
CUDA), so the script a session with an accelerator runs is known to work before it does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_the_gpu_suite_smoke_runs_every_case_on_both_sides(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    got = {(r["case"], r["side"]) for r in rows}
    cases = ("bert-full", "bert-lora", "gpt2-full", "gpt2-lora", "llama1b-lora")
    assert got == {(c, s) for c in cases for s in ("tunesmith", "plain")} | {("ddp", "tunesmith")}
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["flops_per_token"] > 0 and r["device"] == "cpu"
        assert r["trainable_params"] > 0
    by = {(r["case"], r["side"]): r for r in rows}
    # The same adapters both sides (a classifier's head differs: tunesmith also trains BERT's
    # pooler, which the checkpoint has but a new head replaces)
    for case in ("gpt2-lora", "llama1b-lora"):
        assert by[(case, "tunesmith")]["trainable_params"] == \
            by[(case, "plain")]["trainable_params"], case
    assert by[("ddp", "tunesmith")]["world_size"] == 1  # processes=auto on CPU: one worker


def test_flops_per_token_is_6n_plus_attention():
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_suite

    bert = gpu_suite.FULL["bert"]
    n = 12 * (4 * 768**2 + 2 * 768 * 3072)  # BERT-base's 85M non-embedding parameters
    assert gpu_suite.flops_per_token(bert, 128) == 6 * n + 12 * 12 * 768 * 128
    assert 84e6 < n < 86e6
