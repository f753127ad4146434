"""Image classification in the training core: preprocessed pixels -> tensors, augmentation,
and the Xavier-initialised head of the classic transfer-learning recipe.

torch + pyarrow only (no PIL, no torchvision): the random resized crop is a tensor slice
plus `F.interpolate`, so an accelerator machine needs nothing beyond the core's packages.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from tunesmith.training.data import read_split
from tunesmith.training.layers import is_head

# torchvision's RandomResizedCrop aspect-ratio range.
RATIO = (3 / 4, 4 / 3)


def random_resized_crop(x: torch.Tensor, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Crop a random area share in [min_scale, 1] and aspect ratio in RATIO, resize back.

    The algorithm of torchvision's RandomResizedCrop (10 tries, then the whole image) on a
    float (C, H, W) tensor; bilinear with antialias, as torchvision's default.
    """
    _, h, w = x.shape
    for _ in range(10):
        area = h * w * (min_scale + (1 - min_scale) * torch.rand(1, generator=gen).item())
        log_r = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * torch.rand(
            1, generator=gen).item()
        cw = round(math.sqrt(area * math.exp(log_r)))
        ch = round(math.sqrt(area / math.exp(log_r)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            crop = x[None, :, top:top + ch, left:left + cw]
            return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False,
                                 antialias=True)[0]
    return x


class ImageDataset(Dataset):
    """Preprocessed uint8 images of one split; normalised (and augmented) per item.

    Augmentation draws from the global torch RNG, which `set_seed` seeds, so a run is
    reproducible from its seed (a resumed run continues with a different draw).
    """

    def __init__(self, table: Any, meta: dict[str, Any], augment: bool = False,
                 min_scale: float = 0.5) -> None:
        shape = tuple(meta["image_shape"] or (3, 1, 1))
        raw = table.column("pixels").to_pylist()
        self.pixels = np.stack([np.frombuffer(b, np.uint8).reshape(shape) for b in raw]) \
            if raw else np.zeros((0, *shape), np.uint8)
        self.labels: list[int] = [int(v) for v in table.column("labels").to_pylist()]
        self.scale = float(meta["rescale"])
        self.mean = torch.tensor(meta["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(meta["std"], dtype=torch.float32)[:, None, None]
        self.augment = augment
        self.min_scale = min_scale
        self.lengths = [1] * len(self.labels)  # the length-grouped sampler then just shuffles

    @classmethod
    def load(cls, split_dir: Path, meta: dict[str, Any], **kw: Any) -> ImageDataset:
        return cls(read_split(split_dir), meta, **kw)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = torch.from_numpy(self.pixels[i].astype(np.float32))
        if self.augment:
            gen = torch.default_generator
            x = random_resized_crop(x, self.min_scale, gen)
            if torch.rand(1, generator=gen).item() < 0.5:
                x = x.flip(-1)
        x = (x * self.scale - self.mean) / self.std
        return {"pixel_values": x, "labels": self.labels[i]}


def image_collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long)}


def checkpoint_labels(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label)]


def output_linears(model: nn.Module) -> list[str]:
    """Names of the head's Linear layers (ResNet `classifier.1`, ViT/ConvNeXt `classifier`)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and is_head(name)]


def init_head_xavier(model: nn.Module) -> list[str]:
    """Xavier-uniform weights, zero bias on every head Linear; returns their names.

    The recipe's new head: Xavier keeps the logits' variance near the features' (default
    Linear init is ~2.5x narrower for a 2-class head), and zero bias starts at uniform odds.
    """
    names = output_linears(model)
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return names


def load_image_model(base: str, labels: list[str], opts: Any, **kw: Any) -> nn.Module:
    """Pretrained body (random for `scratch`); a new Xavier head when the labels differ.

    A checkpoint whose id2label already equals `labels` keeps its trained head (retraining
    one of our own models); any other label set gets the recipe's fresh head.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    from tunesmith.bases.efficientnet_lite0 import prepare_for_training
    from tunesmith.errors import EnvironmentProblem
    from tunesmith.training.methods import load_pretrained

    if opts.method == "qlora":
        raise EnvironmentProblem("train.method=qlora: not supported for image-classification; "
                                 "use lora (attention models, EfficientNet) or freeze/head_only")
    same = checkpoint_labels(AutoConfig.from_pretrained(base)) == list(labels)
    model = load_pretrained(AutoModelForImageClassification, base, opts, labels=labels,
                            attention=False, **kw)
    if opts.method == "scratch" or not same:
        init_head_xavier(model)
    # EfficientNet-Lite0: BatchNorm momentum, and the neutral SE gates of a random body.
    prepare_for_training(model, scratch=opts.method == "scratch")
    return model


def image_training_data(tokenized: Path, base: str, opts: Any) -> tuple:
    """Train (augmented) and val image datasets, and the base model's image processor
    (saved next to the model, so evaluate, the registry and predict preprocess alike)."""
    from transformers import AutoImageProcessor

    from tunesmith.training.data import read_meta

    meta = read_meta(tokenized)
    train_ds = ImageDataset.load(tokenized / "train", meta, augment=opts.augment,
                                 min_scale=opts.augment_min_scale)
    val_ds = ImageDataset.load(tokenized / "val", meta)
    return train_ds, val_ds, AutoImageProcessor.from_pretrained(base, backend="pil")
