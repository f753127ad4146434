"""Build data/samples/resnet-tiny: a ~25k-parameter ResNet, "pretrained" offline.

No pretrained vision model is available offline, so this one is pretrained here, in a few
seconds on CPU, on a *different* synthetic task (four texture classes: checkerboards,
rings, crossing lines, smooth blobs). Fine-tuning it on the `shapes` sample (stripes vs
dots) then shows the transfer-learning recipe for real: a pretrained body, a new 2-class
Xavier head at 10x the rate, compared against the same network trained from scratch.

    .venv/bin/python scripts/make_tiny_resnet.py [--out data/samples/resnet-tiny]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

SIZE = 32
CLASSES = ["checker", "rings", "crosshatch", "blobs"]


def texture(label: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    a = rng.uniform(0, np.pi)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    p = rng.uniform(5, 10)
    if label == "checker":
        mask = ((u // p) + (v // p)) % 2 == 0
    elif label == "rings":
        cy, cx = rng.uniform(0, SIZE, 2)
        mask = (np.hypot(yy - cy, xx - cx) % p) < p / 2
    elif label == "crosshatch":
        mask = ((u % p) < p / 4) | ((v % p) < p / 4)
    else:
        noise = rng.normal(size=(5, 5))
        mask = np.kron(noise, np.ones((7, 7)))[:SIZE, :SIZE] > 0
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/samples/resnet-tiny"))
    parser.add_argument("--n", type=int, default=150, help="images per pretraining class")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # ImageNet mean/std, as every ResNet checkpoint on the hub; resize to 36, centre crop 32.
    processor = ConvNextImageProcessorPil(size={"shortest_edge": SIZE}, crop_pct=SIZE / 36,
                                          image_mean=[0.485, 0.456, 0.406],
                                          image_std=[0.229, 0.224, 0.225])
    images = [texture(c, rng) for c in CLASSES for _ in range(args.n)]
    y = torch.tensor([i for i in range(len(CLASSES)) for _ in range(args.n)])
    x = torch.tensor(processor(images, return_tensors="np")["pixel_values"])
    config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32],
                          depths=[1, 1], layer_type="basic", num_labels=len(CLASSES),
                          id2label=dict(enumerate(CLASSES)),
                          label2id={c: i for i, c in enumerate(CLASSES)})
    model = ResNetForImageClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y), 32):
            idx = order[start:start + 32]
            loss = model(pixel_values=x[idx], labels=y[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(pixel_values=x).logits.argmax(-1) == y).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f} train accuracy {acc:.3f}")
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({n:,} parameters, pretrained on {CLASSES})")


if __name__ == "__main__":
    main()
