"""CPU image training throughput: tunesmith's train step vs the hot-dog tutorial's plain loop.

    python bench/image_throughput.py [--steps 24] [--batch 16] [--repeats 3] [--quick]

Same model (EfficientNet-Lite0 from the named base, new Xavier head, SE gates frozen, the
base's BatchNorm momentum), same photos (../shared/data/hotdog/train, HOTDOG_DIR overrides),
batch size, steps, optimizer (SGD momentum 0.9, weight decay 1e-3, head at 10x) and
augmentation (random resized crop, area share >= --min-scale, aspect 3/4..4/3, to 224x224,
then a horizontal flip). Modes, each in its own subprocess, interleaved per repeat:
  plain     what a user writes from the tutorial (d2l "Fine-Tuning", torchvision replaced by
            PIL since it has no CPU wheel here): a Dataset that opens each JPEG, crops and
            resizes it with PIL, flips, to tensor, normalises; DataLoader(shuffle=True,
            num_workers=0); forward, backward, SGD step.
  plain_w2  the same with DataLoader(num_workers=2), as the tutorial (which uses 4) would.
  tunesmith tasks.train's core (`train_model(build_request(cfg))`) on the tokenize step's
            output: decoded and resized once, stored uint8; per item a tensor crop +
            antialiased bilinear resize + flip + normalise; Trainer's loop.
Throughput: steady-state images/s between the end of step SKIP and the end of the last step
(the final evaluation and save fall outside). Where the time goes, per image in that window:
decode (PIL open + RGB; tunesmith: none, paid once in tokenize: its cost is printed apart),
augment (crop, resize, flip, to tensor, normalise, collate; plain_w2: the time the loop
waits for a batch from its workers), forward, and the rest (backward, optimizer, the
loop's own overhead).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOTDOG = Path(os.environ.get("HOTDOG_DIR", REPO.parent / "shared" / "data" / "hotdog"))
NAME = "hotdog"
MODES = ("plain", "plain_w2", "tunesmith")
SKIP = 2  # warm-up steps left out of the timing
SIZE = 224
RATIO = (3 / 4, 4 / 3)
LR, HEAD_MULT, WD, MOMENTUM = 1e-3, 10.0, 1e-3, 0.9
EXTS = {".jpg", ".jpeg", ".png"}


def photos(folder: Path) -> tuple[list[Path], list[str]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
    return files, [p.parent.name for p in files]


def crop_box(w: int, h: int, min_scale: float, rand) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (10 tries, then the whole image) as a PIL
    box (left, top, right, bottom); `rand()` draws uniform [0, 1)."""
    for _ in range(10):
        area = w * h * (min_scale + (1 - min_scale) * rand())
        log_r = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * rand()
        cw = round(math.sqrt(area * math.exp(log_r)))
        ch = round(math.sqrt(area / math.exp(log_r)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rand() * (w - cw + 1)), int(rand() * (h - ch + 1))
            return left, top, left + cw, top + ch
    return 0, 0, w, h


class Clock:
    """Seconds per phase; `snap()` copies the totals (taken at the end of each step)."""

    def __init__(self) -> None:
        self.total = {"decode": 0.0, "augment": 0.0, "forward": 0.0}

    def add(self, phase: str, seconds: float) -> None:
        self.total[phase] += seconds

    def snap(self) -> dict[str, float]:
        return dict(self.total)


def breakdown(marks: list[tuple[float, dict]], batch: int) -> dict:
    """images/s and ms per image by phase between the end of step SKIP and the last step."""
    skip = min(SKIP, len(marks) - 2)
    (t0, c0), (t1, c1) = marks[skip], marks[-1]
    n = batch * (len(marks) - 1 - skip)
    wall = t1 - t0
    ms = {k: 1000 * (c1[k] - c0[k]) / n for k in c0}
    ms["rest"] = 1000 * wall / n - sum(ms.values())
    return {"images_per_s": n / wall, "ms_per_image": ms, "timed_images": n}


def lite0_model(labels: list[str]):
    """The named base with a fresh Xavier head, as a user would load it for the tutorial,
    plus the two calls the base's notes require (frozen SE gates, BatchNorm momentum)."""
    from torch import nn
    from transformers import AutoModelForImageClassification

    from tunesmith.bases.efficientnet_lite0 import align_batchnorm_momentum, freeze
    from tunesmith.models import resolve_base

    model = AutoModelForImageClassification.from_pretrained(
        resolve_base("efficientnet-lite0"), num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        ignore_mismatched_sizes=True)
    nn.init.xavier_uniform_(model.classifier.weight)
    nn.init.zeros_(model.classifier.bias)
    freeze(model)
    align_batchnorm_momentum(model)
    return model


def run_plain(steps: int, batch: int, min_scale: float, workers: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from tunesmith.bases.efficientnet_lite0 import MEAN, STD

    files, names = photos(HOTDOG / "train")
    labels = sorted(set(names))
    clock = Clock()

    class Photos(Dataset):
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int):
            t0 = time.perf_counter()
            with Image.open(files[i]) as img:
                img = img.convert("RGB")
            t1 = time.perf_counter()
            box = crop_box(*img.size, min_scale, lambda: torch.rand(1).item())
            img = img.resize((SIZE, SIZE), Image.BILINEAR, box=box)
            if torch.rand(1).item() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1).copy())
            x = (x - MEAN) / STD
            t2 = time.perf_counter()
            return x, labels.index(names[i]), t1 - t0, t2 - t1

    def collate(items):
        t0 = time.perf_counter()
        x = torch.stack([it[0] for it in items])
        y = torch.tensor([it[1] for it in items])
        decode = sum(it[2] for it in items)
        augment = sum(it[3] for it in items) + time.perf_counter() - t0
        return x, y, decode, augment

    torch.manual_seed(0)
    model = lite0_model(labels).train()
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters()
            if not n.startswith("classifier") and p.requires_grad]
    opt = torch.optim.SGD([{"params": body}, {"params": head, "lr": LR * HEAD_MULT}], lr=LR,
                          momentum=MOMENTUM, weight_decay=WD)
    loader = DataLoader(Photos(), batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=collate, drop_last=True, persistent_workers=workers > 0)
    marks: list[tuple[float, dict]] = []
    batches = iter(loader)
    done = 0
    while done < steps:
        t0 = time.perf_counter()
        try:
            x, y, decode, augment = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        wait = time.perf_counter() - t0
        if workers == 0:  # the loop itself decoded and augmented the batch
            clock.add("decode", decode)
            clock.add("augment", wait - decode)
        else:  # workers did it meanwhile: what the loop pays is the wait for the batch
            clock.add("augment", wait)
        t0 = time.perf_counter()
        out = model(pixel_values=x, labels=y)
        clock.add("forward", time.perf_counter() - t0)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        done += 1
        marks.append((time.perf_counter(), clock.snap()))
    return {**breakdown(marks, batch), "steps": done, "loss": float(out.loss)}


def make_project(work: Path, min_scale: float, batch: int) -> float:
    """A project whose tokenize step has run on hotdog/train; returns the decode + resize
    seconds per image the tokenize step pays once (measured here, in-process)."""
    from tunesmith.config import load_config
    from tunesmith.tasks.runner import run_step

    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    (work / "datasets").mkdir(exist_ok=True)
    labels = sorted({n for n in photos(HOTDOG / "train")[1]})
    (work / "datasets" / f"{NAME}.yaml").write_text(
        f"task: image-classification\nsource: {{path: {HOTDOG / 'train'}, format: folder}}\n"
        f"columns: {{image: image, label: label}}\nlabels: {labels}\n", encoding="utf-8")
    cfg = load_config(NAME, work)
    for step in ("ingest", "clean", "tokenize"):
        run_step(cfg, step)
    # The one-off cost: decode + the processor's resize + centre crop, per image.
    from tunesmith.models import resolve_base
    from tunesmith.objectives.image_classification.preprocess import (
        load_processor,
        open_rgb,
        resize,
    )

    processor = load_processor(resolve_base(cfg.model.base, work))
    files = photos(HOTDOG / "train")[0]
    t0 = time.perf_counter()
    for f in files:
        resize(processor, [open_rgb(f)])
    return (time.perf_counter() - t0) / len(files)


def run_tunesmith(work: Path, steps: int, batch: int, min_scale: float) -> dict:
    from transformers import TrainerCallback

    from tunesmith.config import load_config
    from tunesmith.objectives.image_classification import training as TI
    from tunesmith.train_request import build_request
    from tunesmith.training.run import train_model

    clock = Clock()
    getitem = TI.ImageDataset.__getitem__
    collate = TI.image_collator

    def timed_getitem(self, i):
        t0 = time.perf_counter()
        out = getitem(self, i)
        clock.add("augment", time.perf_counter() - t0)
        return out

    def timed_collate(features):
        t0 = time.perf_counter()
        out = collate(features)
        clock.add("augment", time.perf_counter() - t0)
        return out

    TI.ImageDataset.__getitem__ = timed_getitem
    TI.image_collator = timed_collate
    marks: list[tuple[float, dict]] = []

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            starts: list[float] = []
            model.register_forward_pre_hook(lambda m, a, k: starts.append(time.perf_counter()),
                                            with_kwargs=True)
            model.register_forward_hook(
                lambda m, a, out: clock.add("forward", time.perf_counter() - starts.pop()))

        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), clock.snap()))

    out_dir = Path(tempfile.mkdtemp(prefix="bench-img-"))
    cfg = load_config(NAME, work, [
        "train.method=full", "train.optimizer=sgd", f"train.momentum={MOMENTUM}",
        f"train.lr={LR}", f"train.head_lr_mult={HEAD_MULT}", f"train.weight_decay={WD}",
        f"train.batch_size={batch}", f"train.max_steps={steps}",
        f"train.eval_every_steps={steps}", "train.warmup_ratio=0.0", "train.augment=true",
        f"train.augment_min_scale={min_scale}", "train.early_stopping_patience=0",
        "train.max_grad_norm=0"])
    req = build_request(cfg)
    req.output_dir, req.checkpoint_dir = out_dir / "model", out_dir / "ckpt"
    req.callbacks.append(Timer())
    try:
        summary = train_model(req)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {**breakdown(marks, batch), "steps": summary.steps}


def child(mode: str, work: Path, steps: int, batch: int, min_scale: float) -> dict:
    import torch

    if mode == "tunesmith":
        out = run_tunesmith(work, steps, batch, min_scale)
    else:
        out = run_plain(steps, batch, min_scale, workers=2 if mode == "plain_w2" else 0)
    return {"mode": mode, "threads": torch.get_num_threads(), **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-scale", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--work", type=Path, help="project folder (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="4 steps, batch 2, 1 repeat")
    ap.add_argument("--json", type=Path, help="also write all measurements here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.repeats = 4, 2, 1
    if args.child:
        print(json.dumps(child(args.child, args.work, args.steps, args.batch, args.min_scale)))
        return 0
    if not (HOTDOG / "train").is_dir():
        raise SystemExit(f"{HOTDOG}/train: not found (set HOTDOG_DIR)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"}
    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="bench-img-proj-")
        args.work = Path(tmp)
    try:
        once = make_project(args.work, args.min_scale, args.batch)
        print(f"tokenize (once per dataset): decode + resize + centre crop "
              f"{1000 * once:.1f} ms/image", flush=True)
        runs: dict[str, list[dict]] = {m: [] for m in args.modes}
        loads = []
        for r in range(args.repeats):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--child", mode, "--work", str(args.work),
                       "--steps", str(args.steps), "--batch", str(args.batch),
                       "--min-scale", str(args.min_scale)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      cwd=REPO)
                if done.returncode != 0:
                    raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
                res = json.loads(done.stdout.strip().splitlines()[-1])
                loads.append(os.getloadavg()[0])
                runs[mode].append(res)
                ms = res["ms_per_image"]
                print(f"repeat {r + 1} {mode:9} {res['images_per_s']:6.2f} images/s | ms/image "
                      + " ".join(f"{k} {v:.1f}" for k, v in ms.items())
                      + f" | load {loads[-1]:.2f}", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    med = {m: statistics.median(r["images_per_s"] for r in rs) for m, rs in runs.items()}
    print(f"\nmedians of {args.repeats} (batch {args.batch}, {args.steps} steps, "
          f"{runs[args.modes[0]][0]['threads']} torch threads, load average median "
          f"{statistics.median(loads):.2f}):")
    for mode, rs in runs.items():
        ms = {k: statistics.median(r["ms_per_image"][k] for r in rs) for k in rs[0]["ms_per_image"]}
        print(f"  {mode:9} {med[mode]:6.2f} images/s | ms/image "
              + " ".join(f"{k} {v:.1f}" for k, v in ms.items()))
    if "tunesmith" in med:
        for mode in med:
            if mode != "tunesmith":
                print(f"ratio tunesmith / {mode}: {med['tunesmith'] / med[mode]:.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": med, "tokenize_s_per_image":
                                         once, "load_avg": loads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
