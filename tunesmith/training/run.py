"""`train_model(request) -> TrainSummary`: one fine-tuning run on transformers.Trainer.

Works the same in one process (CPU or one GPU) and under `torchrun`/`accelerate launch`
(DDP, or FSDP via `train.fsdp`): the Trainer reads the launcher's environment. Only the
main process writes outputs. Checkpoints go under `checkpoint_dir/<fingerprint>`, where
the fingerprint covers the data digest and every option, so a rerun after a crash resumes
its own run and never a stale one; they are deleted once the outputs are written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import (
    DataCollatorWithFlattening,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ProgressCallback

from tunesmith import faults, gcpolicy, objectives
from tunesmith.console import progress_bars
from tunesmith.errors import ConfigError
from tunesmith.training.callbacks import EpochLog, FaultPoints, QuietProgress
from tunesmith.training.data import (
    LengthGroupedSampler,
    LongestFirstSampler,
    TokenBudgetBatchSampler,
)
from tunesmith.training.layers import count_params
from tunesmith.training.methods import apply_method, check_environment
from tunesmith.training.options import TrainOptions, resolve_defaults
from tunesmith.training.param_groups import make_optimizer, param_groups
from tunesmith.training.request import TrainRequest, TrainSummary
from tunesmith.training.staged import StagedUnfreezing, resolve_stages
from tunesmith.training.warm_start import copy_head_rows, model_dir

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- helpers


def fingerprint(req: TrainRequest) -> str:
    """Hash of data digest + base model + labels + options: names the checkpoint folder."""
    payload = {
        "digest": req.data_digest,
        "base": req.base_model,
        "task": req.task,
        "labels": req.labels,
        "options": dataclasses.asdict(req.options),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def precision_flags(opts: TrainOptions) -> tuple[str, dict[str, bool]]:
    """bf16 on GPUs that support it, else fp16 on CUDA, fp32 on CPU (autocast, not casts)."""
    if not torch.cuda.is_available():
        return "fp32", {}
    choice = opts.precision
    if choice == "auto":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    flags = {"bf16": choice == "bf16", "fp16": choice == "fp16"}
    # TF32 matmuls: ~free speed on Ampere+ at a precision loss irrelevant for fine-tuning.
    flags["tf32"] = torch.cuda.get_device_capability()[0] >= 8
    return choice, flags


def last_complete_checkpoint(ckpt: Path) -> str | None:
    """Newest `checkpoint-N` that finished saving (trainer_state.json is written last), so a
    kill in the middle of a save falls back to the previous checkpoint."""
    if not ckpt.is_dir():
        return None
    done = [d for d in ckpt.glob("checkpoint-*") if (d / "trainer_state.json").is_file()]
    if not done:
        return None
    return str(max(done, key=lambda d: int(d.name.rsplit("-", 1)[-1])))


def best_eval_metrics(state, metric: str) -> dict[str, float]:
    """The validation metrics logged at the best checkpoint, which `load_best_model_at_end`
    has just restored: evaluating it again would repeat a whole validation pass. Empty
    when that evaluation is not in the log (the caller then evaluates)."""
    for entry in reversed(state.log_history):
        if entry.get("step") == state.best_global_step and f"eval_{metric}" in entry:
            return eval_values(entry)
    return {}


def eval_values(logged: dict[str, Any]) -> dict[str, float]:
    """`eval_accuracy: 0.9, ...` -> `accuracy: 0.9, ...` (numbers only)."""
    return {k.removeprefix("eval_"): float(v) for k, v in logged.items()
            if k.startswith("eval_") and isinstance(v, int | float)}


def peak_memory() -> tuple[float, str]:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_rss"


def balanced_class_weights(labels: list[int], n_classes: int) -> list[float]:
    """Inverse class frequency, n / (k * n_c) (scikit-learn's "balanced"): each class then
    carries the same total weight in the loss. A class absent from `labels` gets 0."""
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=n_classes)
    n, k = int(counts.sum()), int((counts > 0).sum())
    return [n / (k * int(c)) if c else 0.0 for c in counts]


class TunesmithTrainer(Trainer):
    """Trainer with our parameter groups, a resume-safe length-grouped sampler and, for
    `class_weights: balanced`, a class-weighted cross-entropy."""

    def __init__(
        self, *args, options: TrainOptions, include_frozen: bool, lengths: list[int],
        class_weight: list[float] | None = None, loss_fn: Any = None, mean_loss: bool = False,
        packed: bool = False, **kw
    ):
        super().__init__(*args, **kw)
        self.packed = packed  # the collator packs rows: a micro-batch costs the sum of lengths
        if mean_loss:
            # Classification heads return a per-batch mean cross-entropy and ignore
            # `num_items_in_batch`, but their forward takes **kwargs, so the Trainer takes the
            # loss for one normalised by the global item count: it skips the division by
            # gradient accumulation and multiplies by the process count under DDP (2x the
            # loss and gradients with 2 workers; tests/test_launch.py, test_train.py).
            self.model_accepts_loss_kwargs = False
        self.loss_fn = loss_fn  # the task type's training_loss (None: the model's own)
        self.options = options
        self.include_frozen = include_frozen
        self.lengths = lengths
        self.class_weight = None if class_weight is None else torch.tensor(class_weight)
        if self.class_weight is not None:
            self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by GA

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Not under DDP/FSDP (a wrapper with .module): their gradient sync needs the
        # wrapper's own forward, which the task's loss would bypass.
        if self.loss_fn is not None and self.class_weight is None \
                and not hasattr(model, "module"):
            loss = self.loss_fn(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss
        if self.class_weight is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), labels.view(-1),
            weight=self.class_weight.to(logits.device))
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            target = self.model if model is None else model
            groups = param_groups(target, self.options, self.include_frozen)
            self.optimizer = make_optimizer(groups, self.options)
        return self.optimizer

    def get_train_dataloader(self):
        """Micro-batches by token budget (`train.batch_tokens`), else the Trainer's own."""
        if not self.options.batch_tokens:
            return super().get_train_dataloader()
        sampler = TokenBudgetBatchSampler(
            self.lengths, self.options.batch_tokens, self.options.batch_size, self.args.seed,
            grouped=self.options.group_by_length, packed=self.packed)
        return self._budget_loader(self.train_dataset, sampler)

    def get_eval_dataloader(self, eval_dataset=None):
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        lengths = getattr(dataset, "lengths", None)
        if not self.options.batch_tokens or lengths is None or self.args.world_size > 1:
            return super().get_eval_dataloader(eval_dataset)
        sampler = TokenBudgetBatchSampler(lengths, self.options.batch_tokens,
                                          self.args.eval_batch_size, self.args.seed,
                                          packed=self.packed, shuffle=False)
        return self._budget_loader(dataset, sampler)

    def _budget_loader(self, dataset, sampler: TokenBudgetBatchSampler):
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        # Grouped and shuffled in units of the global batch: accelerate hands consecutive
        # per-device batches to the ranks, so N processes train on the same rows per
        # optimizer step as one process with N times the batch (tests/test_launch.py).
        batch = (self.args.train_batch_size * self.args.gradient_accumulation_steps
                 * self.args.world_size)
        lengths = self.lengths if self.options.group_by_length else [0] * len(self.lengths)
        return LengthGroupedSampler(lengths, batch, seed=self.args.seed)

    def _get_eval_sampler(self, eval_dataset):
        lengths = getattr(eval_dataset, "lengths", None)
        if lengths is None or self.args.world_size > 1:  # images; DDP shards it its own way
            return super()._get_eval_sampler(eval_dataset)
        return LongestFirstSampler(lengths)


def memory_options(opts: TrainOptions, task: Any, lengths: list[int]) -> TrainOptions:
    """`batch_tokens: None` as the task's budget for this device, and `gradient_checkpointing:
    auto` as on when a row is longer than that budget (it trains alone and cannot be split)."""
    budget = opts.batch_tokens
    if budget is None:
        budget = task.BATCH_TOKENS.get("cuda" if torch.cuda.is_available() else "cpu", 0)
    checkpointing = opts.gradient_checkpointing
    if checkpointing == "auto":
        checkpointing = bool(budget) and max(lengths, default=0) > budget
    return dataclasses.replace(opts, batch_tokens=budget, gradient_checkpointing=checkpointing)


def micro_batches(opts: TrainOptions, lengths: list[int], packed: bool) -> tuple[int, int]:
    """(rows per micro-batch, micro-batches per optimizer step): `batch_size` and `grad_accum`
    as set, or under `batch_tokens` the budget sampler's mean rows and as many micro-batches
    as make `batch_size x grad_accum` rows on average."""
    if not opts.batch_tokens:
        return opts.batch_size, opts.grad_accum
    plan = TokenBudgetBatchSampler(lengths, opts.batch_tokens, opts.batch_size, opts.seed,
                                   grouped=opts.group_by_length, packed=packed)
    rows = plan.mean_rows()
    return max(1, round(rows)), max(1, round(opts.batch_size * opts.grad_accum / rows))


def training_args(req: TrainRequest, ckpt: Path, metric: str, greater: bool,
                  loss_only: bool = False, batching: tuple[int, int] | None = None
                  ) -> TrainingArguments:
    """The Trainer's arguments; `batching`: (rows per micro-batch, micro-batches per step)
    from `micro_batches` (default: batch_size and grad_accum as set)."""
    opts = req.options
    rows, accum = batching or (opts.batch_size, opts.grad_accum)
    epochs = opts.epochs
    if opts.method == "staged":
        epochs = float(sum(s.epochs for s in resolve_stages(opts.stages)))
    strategy = "steps" if opts.eval_every_steps > 0 else "epoch"
    scheduler = {
        "linear": "linear",
        "cosine": "cosine",
        "constant": "constant_with_warmup",
        "plateau": "reduce_lr_on_plateau",
    }[opts.scheduler]
    sched_kwargs = {}
    if opts.scheduler == "plateau":  # halve the rate after each eval without improvement
        sched_kwargs = {"mode": "max" if greater else "min", "factor": 0.5, "patience": 0}
    _, flags = precision_flags(opts)
    return TrainingArguments(
        output_dir=str(ckpt),
        num_train_epochs=epochs,
        max_steps=opts.max_steps,
        per_device_train_batch_size=rows,
        per_device_eval_batch_size=opts.eval_batch_size,
        gradient_accumulation_steps=accum,
        learning_rate=opts.lr,
        weight_decay=opts.weight_decay,
        max_grad_norm=opts.max_grad_norm,
        lr_scheduler_type=scheduler,
        lr_scheduler_kwargs=sched_kwargs,
        warmup_steps=opts.warmup_ratio,  # < 1 is read as a ratio of all steps
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=opts.eval_every_steps or None,
        save_steps=opts.eval_every_steps or None,
        logging_strategy="steps",
        logging_steps=max(1, opts.log_every_steps),
        save_total_limit=opts.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater,
        seed=opts.seed,
        data_seed=opts.seed,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=loss_only,
        torch_compile=opts.compile,
        # Staged runs keep frozen weights in the DDP graph; they get no gradient some epochs.
        # Otherwise off: the Trainer's default (on) walks the autograd graph every step and
        # warns that it found nothing.
        ddp_find_unused_parameters=opts.method == "staged",
        fsdp=opts.fsdp,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        **flags,
    )


# ---------------------------------------------------------------- main entry


def train_model(req: TrainRequest) -> TrainSummary:
    """Train `req.base_model` with `req.options` on the tokenized splits; write the outputs."""
    task = objectives.get(req.task)
    req = _resolved(req, task)
    check_environment(req.options)  # e.g. QLoRA on CPU: stop before loading anything
    faults.point("train.start")
    started = time.perf_counter()
    set_seed(req.options.seed)

    train_ds, val_ds, processor = task.training_data(req.tokenized_dir, req.base_model,
                                                     req.options)
    req = dataclasses.replace(req, options=memory_options(req.options, task, train_ds.lengths))
    opts = req.options
    model = _prepared_model(req, task, processor)
    trainable, total = count_params(model)
    class_weight = None
    if opts.class_weights == "balanced" and task.LABELLED:
        class_weight = balanced_class_weights(train_ds.labels, len(req.labels))

    metric, greater = task.best_metric(opts)
    fp = fingerprint(req)
    ckpt = Path(req.checkpoint_dir) / fp
    compute_metrics, preprocess = task.metric_fns()
    collator = task.collator(processor, opts)
    packed = isinstance(collator, DataCollatorWithFlattening)  # a micro-batch is one sequence
    batching = micro_batches(opts, train_ds.lengths, packed)
    args = training_args(req, ckpt, metric, greater, loss_only=compute_metrics is None,
                         batching=batching)
    if args.process_index == 0:
        print(_start_line(opts, trainable, total, len(train_ds), len(val_ds), batching),
              file=sys.stderr, flush=True)

    trainer = TunesmithTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=processor,
        data_collator=collator,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess,
        callbacks=_callbacks(req, metric, batching[0] * batching[1] * args.world_size,
                             args.num_train_epochs),
        options=opts,
        include_frozen=opts.method == "staged",
        lengths=train_ds.lengths,
        class_weight=class_weight,
        loss_fn=task.training_loss(),
        mean_loss=task.LABELLED,
        packed=packed,
    )
    trainer.remove_callback(ProgressCallback)
    if progress_bars():  # off a terminal, EpochLog's line per epoch is the progress
        trainer.add_callback(QuietProgress)

    resume = last_complete_checkpoint(ckpt)
    if resume and args.process_index == 0:
        print(f"train: resuming from {resume}", file=sys.stderr, flush=True)
    with gcpolicy.frozen():  # Trainer's full gc.collect() at start: 0.6 s of 1M objects
        result = trainer.train(resume_from_checkpoint=resume)
    val_metrics = best_eval_metrics(trainer.state, metric) or eval_values(trainer.evaluate())
    val_metrics = task.finish_val_metrics(val_metrics)

    summary = _summary(req, trainer, result, metric, val_metrics, params=(trainable, total),
                       class_weight=class_weight, started=started, resume=resume, fp=fp,
                       rows=(len(train_ds), len(val_ds)))
    if trainer.is_world_process_zero():
        write_outputs(trainer, processor, req, summary)
        shutil.rmtree(ckpt, ignore_errors=True)
    return summary


def _summary(req: TrainRequest, trainer: Trainer, result: Any, metric: str,
             val_metrics: dict[str, float], *, params: tuple[int, int],
             class_weight: list[float] | None, started: float, resume: str | None, fp: str,
             rows: tuple[int, int]) -> TrainSummary:
    """What the run did, for train_summary.json and the step's result."""
    opts, args, state = req.options, trainer.args, trainer.state
    (trainable, total), (n_train, n_val) = params, rows
    mem, mem_kind = peak_memory()
    best_step = state.best_global_step
    best_epoch = next(
        (e["epoch"] for e in state.log_history
         if e.get("step") == best_step and f"eval_{metric}" in e),
        None,
    )
    return TrainSummary(
        method=opts.method,
        task=req.task,
        lr=float(opts.lr),
        epochs=float(args.num_train_epochs),
        class_weights=class_weight,
        trainable_params=trainable,
        total_params=total,
        trainable_share=trainable / total,
        epochs_run=float(state.epoch or 0.0),
        steps=state.global_step,
        best_epoch=best_epoch,
        best_step=best_step,
        metric=metric,
        best_metric=state.best_metric,
        val_metrics=val_metrics,
        wall_time_s=time.perf_counter() - started,
        samples_per_s=float(result.metrics.get("train_samples_per_second", 0.0)),
        peak_memory_mb=mem,
        memory_kind=mem_kind,
        device=str(args.device),
        world_size=args.world_size,
        precision=precision_flags(opts)[0],
        batch_tokens=int(opts.batch_tokens or 0),
        gradient_checkpointing=bool(opts.gradient_checkpointing),
        resumed_from=resume,
        fingerprint=fp,
        n_train=n_train,
        n_val=n_val,
        output_dir=str(req.output_dir),
    )


def _resolved(req: TrainRequest, task: Any) -> TrainRequest:
    """`req` with lr/epochs None filled from the method's defaults (as config loading
    resolves them, for callers that build TrainOptions themselves); `auto` must have been
    chosen by now (tunesmith.tune)."""
    req = dataclasses.replace(
        req, options=resolve_defaults(dataclasses.replace(req.options), task.LR_DEFAULTS))
    if not isinstance(req.options.lr, int | float):
        raise ConfigError(f"train.lr: {req.options.lr!r} reached training; `auto` is resolved "
                          "by the train step (tunesmith.tune) before it")
    return req


def _prepared_model(req: TrainRequest, task: Any, processor: Any) -> Any:
    """The base (or the warm-start model) loaded for the task, its pad token set from the
    processor, wrapped by the method (frozen layers, LoRA, ...)."""
    opts = req.options
    source = str(model_dir(opts.warm_start)) if opts.warm_start else req.base_model
    labels = list(req.labels) if task.LABELLED else None
    model = task.load_model(source, labels, opts)
    if opts.warm_start and task.LABELLED:
        copy_head_rows(model, req.labels, Path(source))
    pad_id = getattr(processor, "pad_token_id", None)  # tokenizers have one, image processors not
    if pad_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_id
    return apply_method(model, opts, task.LABELLED, task.PEFT_TASK)


def _start_line(opts: TrainOptions, trainable: int, total: int, n_train: int, n_val: int,
                batching: tuple[int, int]) -> str:
    line = (f"train: method={opts.method} lr={opts.lr:g} trainable {trainable:,} / {total:,} "
            f"params ({100 * trainable / total:.2f}%), {n_train} train / {n_val} val rows")
    if batching[0] < opts.batch_size:
        line += (f"; micro-batches of ~{batching[0]} rows (train.batch_tokens "
                 f"{opts.batch_tokens}) x {batching[1]} per step")
    return line


def _callbacks(req: TrainRequest, metric: str, rows_per_step: int,
               epochs: float) -> list[TrainerCallback]:
    """The line per epoch, the fault points, early stopping and staged unfreezing when
    set, then the caller's own (req.callbacks)."""
    opts = req.options
    callbacks: list[TrainerCallback] = [EpochLog(metric, rows_per_step, epochs), FaultPoints()]
    if opts.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=opts.early_stopping_patience))
    if opts.method == "staged":
        callbacks.append(StagedUnfreezing(opts.stages))
    return [*callbacks, *req.callbacks]


def write_outputs(trainer: Trainer, tokenizer, req: TrainRequest, summary: TrainSummary) -> None:
    """model/ (merged for LoRA) + tokenizer, adapter/, train_summary.json, curve.csv."""
    out = Path(req.output_dir)
    # A previous run's files must not survive next to this one's (e.g. adapter/ after full).
    for stale in ("model", "adapter"):
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if req.options.method in ("lora", "qlora"):
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = merged_model(model, req)
    if getattr(model.config, "use_cache", None) is False:
        model.config.use_cache = True  # Trainer turns it off for training; generation wants it
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    summary.write(out / "train_summary.json")
    curve_frame(trainer.state.log_history).to_csv(out / "curve.csv", index=False)


def merged_model(peft_model, req: TrainRequest):
    """The adapter folded into the base weights, so evaluation/serving need no peft."""
    if req.options.method != "qlora":
        return peft_model.merge_and_unload()
    # 4-bit weights can't absorb the adapter exactly: reload the base in bf16 and merge there.
    from peft import PeftModel

    task = objectives.get(req.task)
    full = dataclasses.replace(req.options, method="full")
    base = task.load_model(req.base_model, list(req.labels) if task.LABELLED else None, full,
                           dtype=torch.bfloat16)
    return PeftModel.from_pretrained(base, Path(req.output_dir) / "adapter").merge_and_unload()


def curve_frame(log_history: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per logged step: step, epoch, loss, learning_rate, grad_norm, eval_* columns."""
    rows = [e for e in log_history if "loss" in e or any(k.startswith("eval_") for k in e)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keep = [c for c in frame.columns if not c.startswith(("train_", "total_flos"))]
    return frame[keep].groupby("step", as_index=False).first()
