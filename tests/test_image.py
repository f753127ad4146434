"""image-classification end to end on generated images, with a tiny ResNet and a tiny ViT
built from configs: every step, the Xavier head, head learning-rate groups, fine-tune vs
scratch, bad inputs, and `predict` on image paths through the registry (MLflow SQLite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_cli
from conftest import REPO
from PIL import Image
from registry_helpers import one_torch_thread  # noqa: F401 (a fixture, used by name)

from tunesmith.config import load_config
from tunesmith.errors import DataError, EnvironmentProblem, ValidationFailed

SIZE = 24
LABELS = ["horizontal", "vertical"]


def bars(vertical: bool, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """Bars near one axis with random period, phase and colours: learnable by orientation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    coord = xx if vertical else yy
    mask = (coord + rng.uniform(0, 8)) % rng.uniform(5, 8) < 2.5
    fg, bg = rng.integers(0, 128, 3), rng.integers(128, 256, 3)
    pixels = np.where(mask[..., None], fg, bg) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_images(folder: Path, n: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            bars(label == "vertical", rng).save(folder / label / f"{i:02d}.png")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer ViT (hidden 32, patches 8x8 of 24x24 images) + its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    out = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64)
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessorPil(size={"height": SIZE, "width": SIZE}).save_pretrained(out)
    return out


def image_project(root: Path, base: Path, extra: str = "", n: int = 20) -> Path:
    """A project with the repo's params.yaml and dataset `imgs` (a folder per class)."""
    (root / "datasets").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    make_images(root / "data" / "imgs", n=n)
    (root / "datasets" / "imgs.yaml").write_text(f"""task: image-classification
source: {{path: data/imgs, format: folder}}
columns: {{image: image, label: label}}
labels: [horizontal, vertical]
clean: {{split: {{train: 0.6, val: 0.2, test: 0.2, seed: 1}}}}
validate: {{min_rows: 20, min_class_share: 0.3, max_label_drift: 0.2, min_image_size: 16}}
model: {{base: {base}}}
train: {{epochs: 2, batch_size: 8, lr: 3.0e-3, head_lr_mult: 10.0, early_stopping_patience: 0}}
evaluate: {{latency_examples: 2}}
{extra}""", encoding="utf-8")
    return root


def run_steps(cfg, *steps: str) -> dict:
    from tunesmith.tasks.runner import run_step

    return {s: run_step(cfg, s) for s in steps}


def load_base(base: str, opts):
    from tunesmith import objectives

    return objectives.get("image-classification").load_model(base, LABELS, opts)


def apply(model, opts):
    from tunesmith.training.methods import apply_method

    return apply_method(model, opts, labelled=True, peft_task=None)


# ------------------------------------------------------------------ the pipeline, ResNet


def test_every_step_and_predict_with_a_tiny_resnet(tmp_path, tiny_resnet, monkeypatch, capsys,
                                                    one_torch_thread):  # noqa: F811
    root = image_project(tmp_path / "proj", tiny_resnet)
    # Messy inputs the clean step must drop, each for its own reason.
    folder = root / "data" / "imgs"
    shutil.copy(folder / "vertical" / "00.png", folder / "vertical" / "copy.png")  # same bytes
    (folder / "vertical" / "empty.png").write_bytes(b"")
    (folder / "horizontal" / "cut.png").write_bytes((folder / "horizontal" / "01.png")
                                                    .read_bytes()[:150])
    Image.new("L", (6, 6)).save(folder / "horizontal" / "tiny.png")
    Image.new("L", (SIZE, SIZE), 200).save(folder / "horizontal" / "grey.png")  # mode L -> RGB
    (folder / "notes.txt").write_text("not an image")
    cfg = load_config("imgs", root)
    out = run_steps(cfg, "ingest", "clean", "validate", "tokenize", "train")

    manifest = json.loads((cfg.dirs.raw / "manifest.json").read_text())
    assert manifest["rows"] == 45 and manifest["decodable"] == 43 and manifest["format"] == "folder"
    raw = pd.read_parquet(cfg.dirs.raw / "rows.parquet")
    assert raw["sha256"].notna().all() and set(raw["label"]) == set(LABELS)
    assert out["clean"].dropped == {"zero_size": 1, "truncated": 1, "too_small": 1,
                                    "duplicate_bytes": 1}
    report = json.loads((cfg.dirs.clean / "report.json").read_text())
    assert report["converted_to_rgb"] == 1  # grey.png
    for split in ("train", "val", "test"):
        for p in pd.read_parquet(cfg.dirs.clean / f"{split}.parquet")["image"]:
            assert Image.open(cfg.dirs.clean / p).mode == "RGB"
    assert out["validate"].success
    meta = json.loads((cfg.dirs.tokenized / "meta.json").read_text())
    assert meta["image_shape"] == [3, SIZE, SIZE] and meta["labels"] == LABELS
    summary = json.loads((cfg.dirs.model / "train_summary.json").read_text())
    assert summary["task"] == "image-classification" and summary["steps"] > 0
    assert (cfg.dirs.model / "model" / "preprocessor_config.json").is_file()

    ev = run_steps(cfg, "evaluate")["evaluate"]
    metrics = json.loads(ev.metrics_path.read_text())
    assert metrics["n"] == report["split_sizes"]["test"]
    # Bars by orientation are learnable: well above chance (0.5) on the test images.
    assert metrics["accuracy"] >= 0.75, metrics["accuracy"]
    assert metrics["baseline"]["name"] == "pixels+histogram LR"
    assert (cfg.dirs.eval / "misclassified_grid.png").stat().st_size > 1000
    assert "image" in pd.read_csv(cfg.dirs.eval / "misclassified.csv").columns

    reg = run_steps(cfg, "register")["register"]
    assert reg.version == 1 and "challenger" in reg.aliases
    # The baseline rule ran with the image baseline and evaluate's own numbers.
    pm, base = metrics["f1_macro"], metrics["baseline"]["f1_macro"]
    line = next(r for r in reg.decision.reasons if r.startswith(("pass baseline", "FAIL baseline")))
    assert f"{pm:.4f}" in line and f"pixels+histogram LR {base:.4f}" in line
    assert line.startswith("pass" if pm >= base else "FAIL")

    # predict: image paths as arguments, and a CSV whose paths are relative to it.
    test = pd.read_parquet(cfg.dirs.clean / "test.parquet")
    paths = [str(cfg.dirs.clean / p) for p in test["image"]]
    res = run_cli(["predict", "-d", "imgs", "--alias", "challenger", *paths[:2]], root,
                  monkeypatch, capsys)
    assert res.code == 0, res.err
    lines = [line.split("\t") for line in res.out.strip().splitlines()]
    assert [line[2] for line in lines] == paths[:2] and all(x[0] in LABELS for x in lines)
    test[["image"]].to_csv(cfg.dirs.clean / "batch.csv", index=False)
    res = run_cli(["predict", "-d", "imgs", "--alias", "challenger", "--input",
                   str(cfg.dirs.clean / "batch.csv"), "-o", str(tmp_path / "p.csv")], root,
                  monkeypatch, capsys)
    assert res.code == 0, res.err
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["image", "label", "score"] and len(pred) == len(test)
    # Same model, same preprocessing: the registry agrees with evaluate's confusion matrix.
    confusion = pd.read_csv(cfg.dirs.eval / "confusion.csv")
    assert pred["label"].tolist() == confusion["predicted"].tolist()

    # A folder argument stands for every image under it (sorted, class folders included).
    folder = tmp_path / "to_predict"
    for i, p in enumerate(paths[:3]):
        (folder / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / f"sub{i % 2}" / f"{i}{Path(p).suffix}")
    (folder / "notes.txt").write_text("not an image")
    res = run_cli(["predict", "-d", "imgs", "--alias", "challenger", str(folder)], root,
                  monkeypatch, capsys)
    assert res.code == 0, res.err
    lines = [line.split("\t") for line in res.out.strip().splitlines()]
    shown = sorted(str(p.resolve()) for p in folder.rglob("*.png"))
    assert [line[2] for line in lines] == shown and len(shown) == 3
    by_image = dict(zip(paths, pred["label"], strict=True))
    assert [line[0] for line in lines] == [by_image[paths[int(Path(s).stem)]] for s in shown]
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    res = run_cli(["predict", "-d", "imgs", "--alias", "challenger", str(empty)], root,
                  monkeypatch, capsys)
    assert res.code == DataError.exit_code and "no image files" in res.err

    res = run_cli(["predict", "-d", "imgs", "--alias", "challenger", "nope.png"], root,
                  monkeypatch, capsys)
    errors = [line for line in res.err.splitlines() if line.startswith("error:")]
    assert res.code == DataError.exit_code and len(errors) == 1
    assert "image file not found" in errors[0] and "Traceback" not in res.err


# --------------------------------------------------------------------- ViT, LoRA, CSV


def test_vit_with_lora_from_a_csv_source(tmp_path, tiny_vit, one_torch_thread):  # noqa: F811
    root = image_project(tmp_path / "proj", tiny_vit,
                         extra="train: {method: lora, lora: {r: 4, alpha: 8}}\n")
    rows = [{"file": f"imgs/{p.parent.name}/{p.name}", "class": p.parent.name}
            for p in sorted((root / "data" / "imgs").rglob("*.png"))]
    rows.append({"file": "imgs/vertical/missing.png", "class": "vertical"})
    pd.DataFrame(rows).to_csv(root / "data" / "list.csv", index=False)
    yaml_path = root / "datasets" / "imgs.yaml"
    yaml_path.write_text(yaml_path.read_text()
                         .replace("{path: data/imgs, format: folder}", "{path: data/list.csv}")
                         .replace("{image: image, label: label}", "{image: file, label: class}"))
    cfg = load_config("imgs", root)
    out = run_steps(cfg, "ingest", "clean", "tokenize", "train")
    assert out["clean"].dropped == {"missing_file": 1}
    summary = json.loads((cfg.dirs.model / "train_summary.json").read_text())
    assert summary["method"] == "lora" and summary["trainable_share"] < 0.5
    assert (cfg.dirs.model / "adapter").is_dir()
    from tunesmith.objectives.image_classification.scoring import load_image_classifier

    model, _ = load_image_classifier(cfg.dirs.model / "model", LABELS)  # merged, no peft
    assert model.config.model_type == "vit"


# ------------------------------------------------- recipe: head, rates, fine-tune vs scratch


def _opts(**kw):
    from tunesmith.training.options import TrainOptions

    return TrainOptions(**kw)


@pytest.mark.parametrize("fixture,head", [("tiny_resnet", "classifier.1"),
                                          ("tiny_vit", "classifier")])
def test_new_head_is_xavier_with_zero_bias(request, fixture, head):
    import torch

    base = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    model = load_base(str(base), _opts())
    layer = model.get_submodule(head)
    fan_out, fan_in = layer.weight.shape
    assert fan_out == 2 and torch.count_nonzero(layer.bias) == 0
    bound = (6 / (fan_in + fan_out)) ** 0.5
    # Xavier-uniform: |w| <= bound, std = bound/sqrt(3); torch's default Linear init has
    # std 1/sqrt(3 fan_in), 0.42x of that for fan_in 16 and 2 outputs, so this tells them apart.
    assert layer.weight.abs().max() <= bound
    assert abs(layer.weight.std().item() / (bound / 3**0.5) - 1) < 0.3


def test_own_checkpoint_with_the_same_labels_keeps_its_head(tmp_path, tiny_resnet):
    import torch
    from transformers import AutoModelForImageClassification

    first = load_base(str(tiny_resnet), _opts())
    first.save_pretrained(tmp_path / "mine")
    shutil.copy(tiny_resnet / "preprocessor_config.json", tmp_path / "mine")
    again = load_base(str(tmp_path / "mine"), _opts())
    saved = AutoModelForImageClassification.from_pretrained(tmp_path / "mine")
    assert torch.equal(again.classifier[1].weight, saved.classifier[1].weight)


def test_head_learning_rate_multiplier_groups_and_layers(tiny_resnet, tiny_vit):
    from tunesmith.training.layers import count_params, num_layers, position
    from tunesmith.training.param_groups import param_groups

    opts = _opts(lr=1e-3, head_lr_mult=10.0, weight_decay=0.01)
    model = load_base(str(tiny_resnet), opts)
    assert num_layers(model) == 2  # ResNet stages are its layers
    assert position("resnet.encoder.stages.1.layers.0.layer.0.convolution.weight", 2) == 1
    assert position("resnet.embedder.embedder.convolution.weight", 2) == -1
    groups = param_groups(model, opts)
    head = [g for g in groups if g["is_head"]]
    body = [g for g in groups if not g["is_head"]]
    assert head and all(g["lr"] == pytest.approx(1e-2) for g in head)
    assert body and all(g["lr"] == pytest.approx(1e-3) for g in body)
    assert {g["weight_decay"] for g in head} == {0.01, 0.0}  # bias has no decay

    head_only = apply(model, _opts(method="head_only"))
    assert count_params(head_only)[0] == 16 * 2 + 2
    freeze = apply(model, _opts(method="freeze", freeze_layers=-1))
    trainable = {n for n, p in freeze.named_parameters() if p.requires_grad}
    assert any(".stages.1." in n for n in trainable)
    assert not any(".stages.0." in n or "embedder" in n for n in trainable)

    vit = load_base(str(tiny_vit), opts)
    assert num_layers(vit) == 2 and position("vit.layers.1.attention.q_proj.weight", 2) == 1


def test_finetune_and_scratch_both_train(tmp_path, tiny_resnet, one_torch_thread):  # noqa: F811
    from tunesmith.train_request import build_request
    from tunesmith.training.run import train_model

    cfg = load_config("imgs", image_project(tmp_path / "proj", tiny_resnet))
    run_steps(cfg, "ingest", "clean", "tokenize")
    results = {}
    for method in ("full", "scratch"):
        c = load_config("imgs", cfg.root, [f"train.method={method}", "train.epochs=1"])
        req = build_request(c)
        req.output_dir = tmp_path / method
        summary = train_model(req)
        results[method] = summary
        assert summary.steps > 0 and "accuracy" in summary.val_metrics
    assert results["full"].method == "full" and results["scratch"].method == "scratch"
    # A pretrained body vs a random one: the saved weights differ below the head.
    from safetensors.torch import load_file

    full = load_file(tmp_path / "full" / "model" / "model.safetensors")
    scratch = load_file(tmp_path / "scratch" / "model" / "model.safetensors")
    key = "resnet.embedder.embedder.convolution.weight"
    assert not np.allclose(full[key].numpy(), scratch[key].numpy())


def test_stored_pixels_match_the_processor_and_augmentation_keeps_shape(tmp_path, tiny_resnet):
    import torch

    from tunesmith.objectives.image_classification.preprocess import (
        load_processor,
        normalisation,
        resize,
    )
    from tunesmith.objectives.image_classification.training import random_resized_crop

    processor = load_processor(str(tiny_resnet))
    img = bars(True, np.random.default_rng(3), size=32)
    stored = resize(processor, [img])[0]
    norm = normalisation(processor)
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    ours = (torch.from_numpy(stored).float() * norm["rescale"] - mean) / std
    theirs = torch.as_tensor(processor(img, return_tensors="np")["pixel_values"][0])
    assert torch.allclose(ours, theirs, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    crop = random_resized_crop(torch.from_numpy(stored).float(), 0.3, gen)
    assert crop.shape == (3, SIZE, SIZE) and not torch.equal(crop, torch.from_numpy(stored).float())


# ---------------------------------------------------------------------------- bad input


def test_missing_folder_is_one_line(tmp_path, tiny_resnet, monkeypatch, capsys):
    root = image_project(tmp_path / "proj", tiny_resnet, n=2)
    shutil.rmtree(root / "data" / "imgs")
    res = run_cli(["step", "ingest", "--dataset", "imgs"], root, monkeypatch, capsys)
    assert res.code == DataError.exit_code
    errors = [line for line in res.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "source.path: not found" in errors[0]
    (root / "data" / "imgs" / "empty_class").mkdir(parents=True)
    res = run_cli(["step", "ingest", "--dataset", "imgs"], root, monkeypatch, capsys)
    assert res.code == DataError.exit_code and "no images found" in res.err
    assert not (root / "data" / "raw" / "imgs").exists()


def test_too_many_unreadable_images_fail_validation(tmp_path, tiny_resnet):
    root = image_project(tmp_path / "proj", tiny_resnet, n=12)
    for i in range(4):
        (root / "data" / "imgs" / "vertical" / f"bad{i}.png").write_bytes(b"not a png at all")
    cfg = load_config("imgs", root)
    out = run_steps(cfg, "ingest", "clean")
    assert out["clean"].dropped == {"unreadable": 4}
    with pytest.raises(ValidationFailed, match="decodable"):
        run_steps(cfg, "validate")
    detail = (cfg.dirs.validation / "summary.md").read_text()
    assert "bad0.png" in detail  # the offending file is named


def test_lora_on_a_cnn_is_a_clear_error(tiny_resnet):
    model = load_base(str(tiny_resnet), _opts())
    with pytest.raises(EnvironmentProblem, match="resnet has no attention"):
        apply(model, _opts(method="lora"))
