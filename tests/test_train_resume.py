"""Training as a process: resume after SIGKILL, 2-process DDP on CPU, the step and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_tokenized
from safetensors.torch import load_file

from tunesmith.config import load_config

# Drives the real train step (Config -> build_request -> train_model); a callback can slow
# each step down so the test has time to kill the run between two checkpoints.
SCRIPT = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from transformers import TrainerCallback
from tunesmith.train_request import build_request
from tunesmith.config import load_config
from tunesmith.training.run import train_model

class Slow(TrainerCallback):
    def on_step_end(self, *args, **kwargs):
        time.sleep(float(sys.argv[4]))

root, ckpt, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
req = build_request(load_config("toy", root, overrides=sys.argv[5:]))
req.checkpoint_dir, req.output_dir = ckpt, out
req.callbacks.append(Slow())
s = train_model(req)
if s.world_size == 1 or torch.distributed.get_rank() == 0:
    print("RESULT " + json.dumps({"resumed_from": s.resumed_from, "val": s.val_metrics,
                                  "steps": s.steps, "world_size": s.world_size}))
"""


@pytest.fixture
def toy(project: Path, tmp_path: Path) -> Path:
    """The `toy` project with its tokenized splits in place (as the tokenize step leaves them)."""
    cfg = load_config("toy", project)
    make_tokenized(cfg.dirs.tokenized, Path(cfg.model.base), cfg.labels)
    (tmp_path / "train_script.py").write_text(SCRIPT, encoding="utf-8")
    return project


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def result(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow  # three python+torch start-ups: ~30-90 s on 2 shared cores
def test_resume_after_sigkill_matches_uninterrupted_run(toy, tmp_path):
    script = str(tmp_path / "train_script.py")
    args = ["train.epochs=3", "train.early_stopping_patience=0"]
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, script, str(toy), str(ckpt), str(tmp_path / "a"), "0.25", *args]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(ckpt.glob("*/checkpoint-8/trainer_state.json")):  # 64 rows / 8 = 8 steps/epoch
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "a" / "train_summary.json").exists()

    resumed = subprocess.run([sys.executable, script, str(toy), str(ckpt), str(tmp_path / "a"), "0",
                              *args], env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    fresh = subprocess.run([sys.executable, script, str(toy), str(tmp_path / "ckpt2"),
                            str(tmp_path / "b"), "0", *args],
                           env=env(), capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]

    r, f = result(resumed.stdout), result(fresh.stdout)
    assert r["resumed_from"] and r["resumed_from"].split("-")[-1] in ("8", "16")
    assert f["resumed_from"] is None and r["steps"] == f["steps"] == 24
    assert r["val"]["loss"] == pytest.approx(f["val"]["loss"], abs=1e-4)
    assert r["val"]["accuracy"] == pytest.approx(f["val"]["accuracy"], abs=1e-9)
    wa, wb = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in "ab")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    assert not any(ckpt.iterdir())  # checkpoints of a finished run are cleaned up


@pytest.mark.slow  # process start-ups dominate: ~30 s on 2 shared cores
def test_two_process_ddp_on_cpu(toy, tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "train_script.py"), str(toy), str(tmp_path / "ckpt"), str(out), "0",
         "train.epochs=1"],
        env=env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    # 64 rows, 8 per process per step, 2 processes: 4 optimizer steps per epoch.
    assert summary["steps"] == 4
    assert (out / "model" / "model.safetensors").is_file()


def test_train_step_writes_the_contract_outputs(toy):
    from tunesmith.tasks.train import train

    cfg = load_config("toy", toy, overrides=["train.epochs=1"])
    res = train(cfg)
    assert res.model_dir == cfg.dirs.model / "model" and res.metric == "f1_macro"
    for name in ("model/config.json", "model/model.safetensors", "model/tokenizer.json",
                 "train_summary.json", "curve.csv"):
        assert (cfg.dirs.model / name).is_file(), name
    assert (cfg.dirs.state / "checkpoints").is_dir()


def test_train_step_rejects_tokenized_data_with_other_labels(toy):
    from tunesmith.errors import DataError
    from tunesmith.tasks.train import train

    cfg = load_config("toy", toy, overrides=["labels=[neg, pos, neutral]"])
    with pytest.raises(DataError, match="meta.json: labels"):
        train(cfg)


@pytest.mark.slow  # process start-ups dominate: ~30 s on 2 shared cores
def test_cli_qlora_on_cpu_is_one_line_and_exit_5(toy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU error path")
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "step", "train", "--dataset", "toy",
         "--set", "train.method=qlora"],
        cwd=toy, env=env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 5, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "qlora needs a CUDA GPU" in lines[0]
    assert not (toy / "models").exists()


# What an accelerator machine lacks: the core must import and train without these.
PIPELINE_ONLY = ["datasets", "pydantic", "mlflow", "prefect", "dvc", "great_expectations",
                 "sklearn", "typer"]


@pytest.mark.slow  # a fresh interpreter importing torch+transformers: ~20 s on 2 shared cores
def test_training_core_runs_without_pipeline_packages(toy, tmp_path):
    cfg = load_config("toy", toy)
    code = f"""
import sys
for name in {PIPELINE_ONLY!r}:
    sys.modules[name] = None  # makes `import name` fail and find_spec(name) return None
from pathlib import Path
from tunesmith.training.run import TrainRequest, train_model
from tunesmith.training.options import TrainOptions
s = train_model(TrainRequest(base_model={cfg.model.base!r}, task="text-classification",
    labels=["neg", "pos"], tokenized_dir=Path({str(cfg.dirs.tokenized)!r}),
    output_dir=Path({str(tmp_path / "out")!r}), checkpoint_dir=Path({str(tmp_path / "c")!r}),
    options=TrainOptions(max_steps=2, method="lora")))
loaded = sorted(m for m in {PIPELINE_ONLY!r} if sys.modules.get(m) is not None)
print("RESULT", s.steps, loaded)
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT 2 []" in proc.stdout
