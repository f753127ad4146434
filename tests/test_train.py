"""The fine-tuning engine on a tiny BERT: methods, LR groups, staged unfreezing, warm start."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import make_tokenized, without_dropout
from safetensors.torch import load_file
from transformers import TrainerCallback

from tunesmith.errors import EnvironmentProblem
from tunesmith.training.data import LengthGroupedSampler, LongestFirstSampler, TokenizedDataset
from tunesmith.training.options import LoraOptions, Stage, TrainOptions
from tunesmith.training.param_groups import param_groups
from tunesmith.training.run import TrainRequest, train_model

LABELS = ["neg", "pos"]


@pytest.fixture(autouse=True)
def one_thread():
    """The suite shares 2 cores: 2 torch threads per process stall on each other's barriers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, tiny_bert) -> Path:
    return make_tokenized(tmp_path_factory.mktemp("tok"), tiny_bert, LABELS)


def request(tiny_bert: Path, tokenized: Path, out: Path, **opts) -> TrainRequest:
    base = {"epochs": 1, "batch_size": 16, "lr": 5e-3, "warmup_ratio": 0.0}
    options = TrainOptions(**{**base, **opts})
    return TrainRequest(base_model=str(tiny_bert), task="text-classification", labels=LABELS,
                        tokenized_dir=tokenized, output_dir=out / "model_out",
                        checkpoint_dir=out / "ckpt", options=options)


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(path / "model.safetensors"))
    return {k.removeprefix("bert."): v for k, v in state.items()}


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if k in after and not torch.equal(before[k], after[k])}


def groups(names: set[str]) -> set[str]:
    """Coarse position of each changed weight: emb, layer0, layer1, pooler, classifier."""
    out = set()
    for n in names:
        if n.startswith("embeddings"):
            out.add("emb")
        elif n.startswith("encoder.layer."):
            out.add("layer" + n.split(".")[2])
        else:
            out.add(n.split(".")[0])
    return out


ALL = {"emb", "layer0", "layer1", "pooler", "classifier"}


@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        ("full", {}, ALL),
        ("freeze", {"freeze_layers": 1}, {"layer1", "pooler", "classifier"}),
        ("freeze", {"freeze_layers": -1}, {"layer1", "pooler", "classifier"}),
        ("freeze", {"freeze_layers": 2}, {"pooler", "classifier"}),
        ("head_only", {}, {"pooler", "classifier"}),
    ],
)
def test_method_trains_exactly_its_weights(tiny_bert, tokenized, tmp_path, method, extra, expected):
    summary = train_model(request(tiny_bert, tokenized, tmp_path, method=method, **extra))
    out = tmp_path / "model_out"
    assert groups(changed(weights(tiny_bert), weights(out / "model"))) == expected
    assert summary.trainable_params < summary.total_params or expected == ALL
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["method"] == method and saved["trainable_params"] == summary.trainable_params
    assert saved["peak_memory_mb"] > 0 and saved["samples_per_s"] > 0
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step") and len(curve) >= 4  # one row per optimizer step
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"}
    assert (out / "model" / "tokenizer.json").is_file() and not (out / "adapter").exists()


def test_scratch_starts_from_random_weights(tiny_bert, tokenized, tmp_path):
    summary = train_model(request(tiny_bert, tokenized, tmp_path, method="scratch", max_steps=1))
    before, after = weights(tiny_bert), weights(tmp_path / "model_out" / "model")
    # One step of lr 5e-3 moves weights by <~1e-2; a fresh init differs by far more.
    word = "embeddings.word_embeddings.weight"
    assert (before[word] - after[word]).abs().max() > 0.05
    assert summary.trainable_params == summary.total_params


def test_lora_saves_adapter_and_merged_model(tiny_bert, tokenized, tmp_path):
    from transformers import AutoModelForSequenceClassification

    summary = train_model(request(tiny_bert, tokenized, tmp_path, method="lora", lr=2e-2,
                                  lora=LoraOptions(r=4, alpha=8, dropout=0.0)))
    out = tmp_path / "model_out"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert 0 < summary.trainable_params < summary.total_params
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(adapter_cfg["target_modules"]) == {"query", "key", "value"}
    assert "classifier" in adapter_cfg["modules_to_save"]
    merged = weights(out / "model")
    assert not any("lora" in k for k in merged)
    # Only LoRA targets (merged) and the fully trained head may differ from the base.
    assert {n.split(".")[-2] for n in changed(weights(tiny_bert), merged)
            if n.startswith("encoder")} <= {"query", "key", "value"}
    assert groups(changed(weights(tiny_bert), merged)) >= {"classifier", "layer0", "layer1"}
    # The merged model is a plain HF model that reproduces the run's final val accuracy.
    ds = TokenizedDataset.load(tokenized / "val")
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in ds.input_ids], batch_first=True)
    with torch.no_grad():
        preds = model(input_ids=ids, attention_mask=(ids != 0).long()).logits.argmax(-1)
    acc = (preds == torch.tensor(ds.labels)).float().mean().item()
    assert acc == pytest.approx(summary.val_metrics["accuracy"], abs=1e-6)


def test_qlora_on_cpu_stops_before_loading(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CPU error path")
    req = TrainRequest(base_model="/nonexistent", task="text-classification", labels=LABELS,
                       tokenized_dir=tmp_path / "missing", output_dir=tmp_path / "o",
                       checkpoint_dir=tmp_path / "c", options=TrainOptions(method="qlora"))
    with pytest.raises(EnvironmentProblem, match="qlora needs a CUDA GPU"):
        train_model(req)  # a missing model or data would raise something else first
    assert not (tmp_path / "o").exists()


class LrRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        self.lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})


def test_param_groups_head_mult_layer_decay_and_no_decay(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    opts = TrainOptions(lr=1e-3, head_lr_mult=10.0, layer_decay=0.5, weight_decay=0.1)
    by_name = {g["name"]: g for g in param_groups(model, opts)}
    assert by_name["head/decay"]["lr"] == pytest.approx(1e-2)
    assert by_name["layer1/decay"]["lr"] == pytest.approx(1e-3)
    assert by_name["layer0/decay"]["lr"] == pytest.approx(5e-4)
    assert by_name["emb/decay"]["lr"] == pytest.approx(2.5e-4)
    for g in by_name.values():
        no_decay = g["name"].endswith("no_decay")
        assert g["weight_decay"] == (0.0 if no_decay else 0.1)
        assert all((p.ndim == 1) == no_decay for p in g["params"])  # biases + LayerNorms
    n_grouped = sum(len(g["params"]) for g in by_name.values())
    assert n_grouped == len(list(model.parameters()))


def test_trainer_uses_the_groups_with_sgd(tiny_bert, tokenized, tmp_path):
    rec = LrRecorder()
    req = request(tiny_bert, tokenized, tmp_path, optimizer="sgd", momentum=0.9, lr=1e-2,
                  head_lr_mult=10.0, layer_decay=0.5, scheduler="constant", max_steps=2)
    req.callbacks.append(rec)
    train_model(req)
    assert rec.lrs[-1]["head/decay"] == pytest.approx(0.1)
    assert rec.lrs[-1]["layer1/decay"] == pytest.approx(1e-2)
    assert rec.lrs[-1]["emb/decay"] == pytest.approx(2.5e-3)


class FusedFlag(TrainerCallback):
    """The optimizer's `fused` flag at each step."""

    def __init__(self) -> None:
        self.fused: list[bool | None] = []

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        self.fused.append(optimizer.defaults.get("fused"))


def test_cpu_training_uses_fused_adamw_and_pads_to_the_longest_row(tiny_bert, tokenized,
                                                                    tmp_path):
    # Regression for two CPU slowdowns (docs/benchmarks.md): rounding batch widths up to a
    # multiple of 8 (~20% of a MiniLM step on ~16-token SST-2 batches) and the for-loop AdamW.
    from transformers import AutoTokenizer

    from tunesmith.objectives import text_classification

    rec = FusedFlag()
    req = request(tiny_bert, tokenized, tmp_path, max_steps=2)
    req.callbacks.append(rec)
    train_model(req)
    assert rec.fused and all(rec.fused)
    collate = text_classification.collator(AutoTokenizer.from_pretrained(tiny_bert), None)
    ds = TokenizedDataset.load(tokenized / "train")
    rows = [ds[i] for i in range(4)]
    longest = max(len(r["input_ids"]) for r in rows)
    assert longest % 8 != 0, "pick rows whose longest length is not already a multiple of 8"
    assert collate(rows)["input_ids"].shape == (4, longest)


class FrozenAtStart(TrainerCallback):
    """How many objects the collector skips when training begins."""

    def __init__(self) -> None:
        self.frozen: list[int] = []

    def on_train_begin(self, args, state, control, **kw):
        self.frozen.append(gc.get_freeze_count())


def test_training_runs_with_the_objects_alive_before_it_frozen(tiny_bert, tokenized, tmp_path):
    # Trainer.train() runs a full gc.collect() first: 0.6 s over ~900k objects in a flow
    # (tunesmith/gcpolicy.py). Frozen, they are skipped, and handed back afterwards.
    rec = FrozenAtStart()
    req = request(tiny_bert, tokenized, tmp_path, max_steps=1)
    req.callbacks.append(rec)
    train_model(req)
    assert rec.frozen and rec.frozen[0] > 10_000  # torch, transformers and the model
    assert gc.get_freeze_count() == 0


class Snapshots(TrainerCallback):
    """Weights at each epoch end, and the body's learning rate during each epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.body_lr: list[float] = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        if len(self.body_lr) < len(self.states):
            self.body_lr.append(next(g["lr"] for g in optimizer.param_groups
                                     if g["name"] == "layer1/decay"))

    def on_epoch_end(self, args, state, control, model=None, **kw):
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def test_staged_unfreezing_follows_the_schedule(tiny_bert, tokenized, tmp_path):
    snaps = Snapshots()
    stages = [Stage(epochs=1, unfreeze="head"), Stage(epochs=1, unfreeze=1, lr_scale=0.1),
              Stage(epochs=1, unfreeze="all", lr_scale=0.5)]
    req = request(tiny_bert, tokenized, tmp_path, method="staged", stages=stages,
                  scheduler="constant", early_stopping_patience=0)
    req.callbacks.append(snaps)
    summary = train_model(req)
    assert summary.epochs_run == 3
    per_epoch = [groups({k.removeprefix("bert.") for k in changed(a, b)})
                 for a, b in zip(snaps.states, snaps.states[1:], strict=False)]
    assert per_epoch == [{"pooler", "classifier"}, {"layer1", "pooler", "classifier"}, ALL]
    assert snaps.body_lr == pytest.approx([5e-3, 5e-4, 2.5e-3])


def test_warm_start_copies_rows_of_shared_labels(tiny_bert, tokenized, tmp_path):
    from tunesmith import objectives
    from tunesmith.training.warm_start import copy_head_rows, model_dir

    train_model(request(tiny_bert, tokenized, tmp_path, max_steps=2))
    previous = model_dir(tmp_path / "model_out")
    old = weights(previous)
    new_labels = ["pos", "neutral", "neg"]  # order changed, one label new, none dropped
    model = objectives.get("text-classification").load_model(str(previous), new_labels,
                                                             TrainOptions())
    shared = copy_head_rows(model, new_labels, previous)
    assert shared == ["pos", "neg"]
    w, b = model.classifier.weight.detach(), model.classifier.bias.detach()
    old_w, old_b = old["classifier.weight"], old["classifier.bias"]
    assert torch.equal(w[0], old_w[1]) and torch.equal(w[2], old_w[0])
    assert torch.equal(b[0], old_b[1]) and torch.equal(b[2], old_b[0])
    assert not torch.equal(w[1], old_w[0])
    # The body is the previous model's, not the base's.
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(model.bert.state_dict()[key], old[key])


def test_warm_start_run_end_to_end(tiny_bert, tokenized, tmp_path):
    train_model(request(tiny_bert, tokenized, tmp_path / "a", max_steps=2))
    summary = train_model(request(tiny_bert, tokenized, tmp_path / "b", max_steps=2,
                                  warm_start=str(tmp_path / "a" / "model_out")))
    assert summary.steps == 2


def test_length_grouped_sampler_is_a_function_of_seed_and_epoch():
    lengths = [(i * 7) % 31 + 1 for i in range(200)]
    a, b = LengthGroupedSampler(lengths, 16, seed=1), LengthGroupedSampler(lengths, 16, seed=1)
    first = list(a)
    assert sorted(first) == list(range(200)) and first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    # Batches are near-uniform in length: spread within a batch well below the global spread.
    spreads = [max(lengths[i] for i in first[s:s + 16]) - min(lengths[i] for i in first[s:s + 16])
               for s in range(0, 192, 16)]
    assert sum(spreads) / len(spreads) < 10
    # transformers' order: each megabatch (50 batches) runs longest first. Shuffling its
    # batches too ran a MiniLM CPU epoch at 0.82x (docs/benchmarks.md, section 2).
    assert [lengths[i] for i in first] == sorted((lengths[i] for i in first), reverse=True)


class EvalCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_evaluate(self, args, state, control, **kw):
        self.steps.append(state.global_step)


def test_validation_once_per_epoch_and_the_summary_reports_the_best_one(tiny_bert, tokenized,
                                                                        tmp_path):
    counter = EvalCounter()
    req = request(tiny_bert, tokenized, tmp_path, epochs=3, lr=2e-2, early_stopping_patience=0)
    req.callbacks.append(counter)
    summary = train_model(req)
    # No extra pass after training: the restored best checkpoint's metrics are in the log.
    assert len(counter.steps) == 3 and summary.best_step in counter.steps
    logged = pd.read_csv(tmp_path / "model_out" / "curve.csv").dropna(subset=["eval_loss"])
    best = logged[logged["step"] == summary.best_step].iloc[0]
    assert summary.val_metrics["loss"] == pytest.approx(best["eval_loss"])
    assert summary.val_metrics["accuracy"] == pytest.approx(best["eval_accuracy"])


def test_longest_first_sampler_is_a_permutation_by_descending_length():
    lengths = [(i * 7) % 31 + 1 for i in range(200)]
    order = list(LongestFirstSampler(lengths))
    assert sorted(order) == list(range(200)) and len(LongestFirstSampler(lengths)) == 200
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)


def test_params_yaml_train_section_matches_the_option_defaults():
    import dataclasses

    import yaml
    from conftest import REPO

    section = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    defaults = dataclasses.asdict(TrainOptions())
    assert set(section) == set(defaults)
    assert {k: v for k, v in section.items() if v != defaults[k]} == {}


def curve_column(out: Path, name: str) -> list[float]:
    import pandas as pd

    frame = pd.read_csv(out / "model_out" / "curve.csv")
    return frame[name].dropna().tolist()


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant", "plateau"])
def test_schedulers_warmup_and_accumulation(tiny_bert, tokenized, tmp_path, scheduler):
    summary = train_model(request(
        tiny_bert, tokenized, tmp_path, scheduler=scheduler, warmup_ratio=0.25, max_steps=8,
        batch_size=8, grad_accum=2, eval_every_steps=2, early_stopping_patience=0, lr=1e-3))
    lrs = curve_column(tmp_path, "learning_rate")
    assert summary.steps == 8 and len(lrs) == 8
    assert len(curve_column(tmp_path, "eval_accuracy")) == 4  # every 2 steps
    if scheduler == "plateau":  # no warmup; halves after an evaluation without improvement
        assert all(any(abs(lr - 1e-3 / 2**k) < 1e-12 for k in range(5)) for lr in lrs)
    else:
        # Each row has the rate its step used: 2 warmup steps (0, lr/2), then the peak.
        assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])
        if scheduler == "constant":
            assert lrs[-1] == pytest.approx(1e-3)
        else:
            assert lrs[-1] < lrs[4] < lrs[2]


def test_early_stopping_and_best_checkpoint(tiny_bert, tokenized, tmp_path):
    # lr 1e-12: the metric never improves, so patience 1 stops after the second evaluation.
    summary = train_model(request(tiny_bert, tokenized, tmp_path, epochs=5, lr=1e-12,
                                  early_stopping_patience=1, gradient_checkpointing=True))
    assert summary.epochs_run == 2 and summary.best_epoch == 1


def test_same_seed_same_weights_on_cpu(tiny_bert, tokenized, tmp_path):
    for name in ("a", "b"):
        train_model(request(tiny_bert, tokenized, tmp_path / name, max_steps=3))
    wa, wb = (weights(tmp_path / n / "model_out" / "model") for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_gradient_accumulation_trains_like_the_whole_batch(tiny_bert, tokenized, tmp_path):
    # Regression: the classification head's mean loss ignores num_items_in_batch, so the
    # Trainer skipped dividing it by the accumulation steps (2x gradients at grad_accum 2).
    base = without_dropout(tiny_bert, tmp_path / "nodrop")
    train_model(request(base, tokenized, tmp_path / "a", max_steps=2, batch_size=16))
    train_model(request(base, tokenized, tmp_path / "b", max_steps=2, batch_size=8,
                        grad_accum=2))
    wa, wb = (weights(tmp_path / n / "model_out" / "model") for n in "ab")
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-5, worst


def test_balanced_class_weights_are_inverse_class_frequency():
    from tunesmith.training.run import balanced_class_weights

    assert balanced_class_weights([0, 0, 0, 1], 2) == [4 / 6, 4 / 2]
    assert balanced_class_weights([0, 0, 2], 3) == [3 / 4, 0.0, 3 / 2]  # absent class: 0


def test_balanced_class_weights_weight_the_loss_the_trainer_optimises(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from tunesmith.training.run import TunesmithTrainer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    torch.nn.init.normal_(model.classifier.weight, std=2.0)  # logits that differ per row
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 13, 3], [2, 14, 15, 3]]),
             "attention_mask": torch.ones(3, 4, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1])}
    losses = {}
    for name, weight in (("none", None), ("balanced", [1.0, 3.0])):
        trainer = TunesmithTrainer(model=model, args=args, options=TrainOptions(),
                                   include_frozen=False, lengths=[4], class_weight=weight)
        with torch.no_grad():
            losses[name] = float(trainer.compute_loss(model, dict(batch)))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    weighted = torch.nn.functional.cross_entropy(logits, batch["labels"],
                                                 weight=torch.tensor([1.0, 3.0]))
    plain = torch.nn.functional.cross_entropy(logits, batch["labels"])
    assert losses["balanced"] == pytest.approx(float(weighted), rel=1e-5)
    assert losses["none"] == pytest.approx(float(plain), rel=1e-5)
    assert abs(losses["balanced"] - losses["none"]) > 1e-3


def test_unset_lr_is_the_methods_default_and_the_summary_says_what_was_used(
        tiny_bert, tokenized, tmp_path):
    from tunesmith.training.options import LR_DEFAULTS

    summary = train_model(request(tiny_bert, tokenized, tmp_path, method="lora", lr=None,
                                  epochs=None, max_steps=2, class_weights="balanced"))
    assert summary.lr == LR_DEFAULTS["adamw"]["lora"] and summary.epochs == 3
    labels = TokenizedDataset.load(tokenized / "train").labels
    n, k = len(labels), 2
    assert summary.class_weights == [n / (k * labels.count(c)) for c in (0, 1)]
    saved = json.loads((tmp_path / "model_out" / "train_summary.json").read_text())
    assert saved["lr"] == summary.lr and saved["class_weights"] == summary.class_weights


def test_a_new_head_is_one_line_not_transformers_load_report(tmp_path, caplog, capsys):
    """Loading a body-only checkpoint for classification logs "new head: classifier, 2
    labels" instead of transformers' dozen-line LOAD REPORT table (issue: noisy console)."""
    import logging

    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

    from tunesmith.training.methods import load_note, load_pretrained
    from tunesmith.training.options import TrainOptions

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "body")
    with caplog.at_level(logging.INFO):
        load_pretrained(AutoModelForSequenceClassification, str(tmp_path / "body"),
                        TrainOptions(method="full"), labels=["a", "b"])
    said = [r.getMessage() for r in caplog.records]
    assert said == ["new head: bert.pooler, classifier, 2 labels"], said  # BERT's pooler
    assert "LOAD REPORT" not in capsys.readouterr().err
    # A body weight missing from the checkpoint is a real problem: a warning that names it.
    caplog.clear()
    note = load_note({"missing_keys": {"bert.encoder.layer.0.output.dense.weight"},
                      "mismatched_keys": [("classifier.weight", (3, 16), (2, 16))]}, ["a", "b"])
    assert note == "new head: classifier, 2 labels"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "bert.encoder.layer.0.output.dense.weight" in caplog.records[0].getMessage()


def test_a_resized_image_head_and_lora_warn_nothing(tiny_resnet, tiny_bert, caplog, capsys):
    """Warnings the user can do nothing about are handled where they start: the image head
    resized from the checkpoint's labels (transformers: "num_labels=2 is incompatible to the
    id2label map of length 3", every image run) and peft reading a deprecated transformers
    property ("is_gradient_checkpointing is deprecated", every LoRA run)."""
    import logging
    import warnings

    from transformers import AutoModelForSequenceClassification

    from tunesmith import objectives
    from tunesmith.training.methods import apply_method, load_pretrained
    from tunesmith.training.options import LoraOptions, TrainOptions

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        images = objectives.get("image-classification")
        model = images.load_model(str(tiny_resnet), ["a", "b"], TrainOptions(method="full"))
        assert model.config.num_labels == 2
        lora = TrainOptions(method="lora", lora=LoraOptions(r=2, alpha=4))
        bert = load_pretrained(AutoModelForSequenceClassification, str(tiny_bert), lora,
                               labels=["neg", "pos"])
        apply_method(bert, lora, labelled=True, peft_task="SEQ_CLS")
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    out = capsys.readouterr()
    assert not [m for m in said if "num_labels" in m or "deprecated" in m], said
    assert "incompatible" not in out.out + out.err


def test_the_trainers_private_sampler_hooks_still_pick_our_samplers(tiny_bert, tmp_path):
    """TunesmithTrainer overrides Trainer's private `_get_train_sampler` and
    `_get_eval_sampler` (the resume-safe grouped order, longest-first evaluation: section 2 of
    docs/benchmarks.md). If transformers renames or stops calling them, the override is dead
    code and training silently goes back to random order; this fails instead."""
    from torch.utils.data import Dataset
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from tunesmith.training.data import LengthGroupedSampler, LongestFirstSampler
    from tunesmith.training.run import TunesmithTrainer

    class Rows(Dataset):
        lengths = [3, 9, 5, 7]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            n = self.lengths[i]
            return {"input_ids": [2] * n, "attention_mask": [1] * n, "labels": i % 2}

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                             per_device_train_batch_size=2, per_device_eval_batch_size=2)
    trainer = TunesmithTrainer(model=model, args=args, train_dataset=Rows(),
                               eval_dataset=Rows(), options=TrainOptions(batch_tokens=0),
                               include_frozen=False, lengths=Rows.lengths)

    def sampler_of(loader):
        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        return [s for s in (sampler, getattr(batch_sampler, "sampler", None)) if s is not None]

    assert any(isinstance(s, LengthGroupedSampler)
               for s in sampler_of(trainer.get_train_dataloader()))
    assert any(isinstance(s, LongestFirstSampler)
               for s in sampler_of(trainer.get_eval_dataloader()))
