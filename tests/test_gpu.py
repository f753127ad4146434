"""On a CUDA GPU (`pytest -m gpu`; bench/gpu_suite.sh runs them): bf16 autocast is what
trains, QLoRA trains and merges, a LoRA adapter saved on the GPU loads on a CPU, FSDP wraps
and saves. Tiny models from a config (tests/conftest.py); skipped without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _tiny(tmp_path: Path, family: str):
    import gpu_suite

    arch = gpu_suite.SMOKE["bert" if family == "bert" else "llama1b"]
    base = gpu_suite.build_base(arch, tmp_path / f"base-{family}")
    data = gpu_suite.tokenized(arch, 64, tmp_path)
    return arch, base, data


def _request(arch, base, data, out: Path, **opts):
    from tunesmith.training.options import LoraOptions, TrainOptions
    from tunesmith.training.run import TrainRequest

    options = TrainOptions(**{"max_steps": 4, "lr": 1e-3, "batch_size": 4,
                              "early_stopping_patience": 0, "metric_for_best": "loss",
                              "lora": LoraOptions(r=4, alpha=8, dropout=0.0), **opts})
    return TrainRequest(base_model=str(base), task=arch.task,
                        labels=[] if arch.task == "causal-lm" else ["a", "b"],
                        tokenized_dir=data, output_dir=out, checkpoint_dir=out / "ckpt",
                        options=options)


def test_bf16_autocast_is_what_trains(tmp_path):
    """precision auto on a bf16 GPU: the summary says bf16 and the matmuls inside the
    training step produce bfloat16 (autocast on), with the weights kept in fp32."""
    from transformers import TrainerCallback

    from tunesmith.training.run import train_model

    arch, base, data = _tiny(tmp_path, "bert")
    seen: set = set()

    class Dtypes(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            first.register_forward_hook(lambda m, a, out: seen.add((out.dtype,
                                                                    m.weight.dtype)))

    req = _request(arch, base, data, tmp_path / "out", method="full")
    req.callbacks.append(Dtypes())
    summary = train_model(req)
    assert summary.precision == "bf16" and summary.device.startswith("cuda")
    assert (torch.bfloat16, torch.float32) in seen, seen


def test_qlora_trains_and_merges(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from tunesmith.training.run import train_model

    arch, base, data = _tiny(tmp_path, "llama")
    summary = train_model(_request(arch, base, data, tmp_path / "out", method="qlora"))
    assert summary.trainable_share < 0.5 and summary.steps == 4
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    assert getattr(merged, "hf_quantizer", None) is None  # plain weights, servable anywhere
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()


def test_a_lora_adapter_saved_on_the_gpu_loads_on_a_cpu(tmp_path):
    from tunesmith.training.run import train_model

    arch, base, data = _tiny(tmp_path, "llama")
    train_model(_request(arch, base, data, tmp_path / "out", method="lora"))
    code = f"""
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
assert not torch.cuda.is_available()
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(base)!r}),
                                  {str(tmp_path / "out" / "adapter")!r})
out = model(input_ids=torch.tensor([[7, 8, 9]])).logits
print("OK", bool(torch.isfinite(out).all()))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0 and "OK True" in proc.stdout, proc.stderr[-2000:]


def test_fsdp_wraps_and_saves_through_the_launcher(tmp_path):
    """train.fsdp with the pipeline's launcher (one worker per visible GPU): rank 0 saves a
    model that loads plainly."""
    from transformers import AutoModelForCausalLM

    from tunesmith.training.launch import launch

    arch, base, data = _tiny(tmp_path, "llama")
    summary = launch(_request(arch, base, data, tmp_path / "out", method="full",
                              processes="auto", fsdp="full_shard auto_wrap"))
    assert summary.world_size == torch.cuda.device_count() and summary.steps == 4
    AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["precision"] \
        == "bf16"
