"""Draw the bundled `shapes` image dataset: data/samples/shapes/{horizontal,vertical}/NNN.png.

Two classes that differ by a learnable pattern, not by colour: bars near horizontal vs
near vertical (+-20 degrees), random period, width and phase, random foreground and
background colours and pixel noise. A colour histogram cannot separate them and, with a
random phase, neither can a linear model on raw pixels; a small CNN can. Deterministic
(seeded); rerun to regenerate the same bytes:

    .venv/bin/python scripts/make_sample_images.py [--out data/samples/shapes] [--n 40]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    fg = rng.integers(0, 256, 3)
    bg = rng.integers(0, 256, 3)
    while np.abs(fg - bg).sum() < 180:  # keep the pattern visible
        bg = rng.integers(0, 256, 3)
    return fg, bg


def bars(rng: np.random.Generator, vertical: bool, size: int = SIZE) -> np.ndarray:
    """Foreground mask of parallel bars within 20 degrees of the axis, period 5-9 px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    angle = np.deg2rad(rng.uniform(-20, 20)) + (0 if vertical else np.pi / 2)
    period = rng.uniform(5, 9)
    phase = rng.uniform(0, period)
    t = (xx * np.cos(angle) + yy * np.sin(angle) + phase) % period
    return t < rng.uniform(0.3, 0.55) * period


def draw(label: str, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """One RGB image of class `label` ("horizontal" or "vertical")."""
    mask = bars(rng, label == "vertical", size)
    fg, bg = _colours(rng)
    pixels = np.where(mask[..., None], fg, bg).astype(float)
    pixels += rng.normal(0, 12, pixels.shape)  # sensor-like noise; small enough for PNG size
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/samples/shapes"))
    parser.add_argument("--n", type=int, default=40, help="images per class")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for label in ("horizontal", "vertical"):
        folder = args.out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.n):
            draw(label, rng).save(folder / f"{i:03d}.png", optimize=True)
    total = sum(f.stat().st_size for f in args.out.rglob("*.png"))
    print(f"wrote {2 * args.n} images to {args.out} ({total / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
