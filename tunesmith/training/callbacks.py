"""Trainer callbacks: a progress bar without log spam, and one summary line per evaluation."""

from __future__ import annotations

import sys
import time

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


class QuietProgress(ProgressCallback):
    """transformers' bar, minus printing every log dict (we log every step for the curve)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None

    # No second bar for each validation pass: nested bars tear across log lines, and the
    # EpochLog line reports the pass.
    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        return None


class EpochLog(TrainerCallback):
    """Prints `epoch 2/3 step 40: loss 0.41 | val accuracy 0.86 | 812 samples/s` per eval."""

    def __init__(self, metric: str, samples_per_step: int, total_epochs: float) -> None:
        self.metric = metric
        self.samples_per_step = samples_per_step
        self.total_epochs = total_epochs
        self._t0 = time.perf_counter()
        self._step0 = 0
        self._loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0, self._step0 = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # The final re-evaluation of the best model repeats the last step: no new line.
        if not state.is_world_process_zero or not metrics or state.global_step == self._step0:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        rate = (state.global_step - self._step0) * self.samples_per_step / elapsed
        val = metrics.get(f"eval_{self.metric}", float("nan"))
        loss = f"{self._loss:.4f}" if self._loss is not None else "-"
        print(
            f"epoch {state.epoch:.2f}/{self.total_epochs:g} step {state.global_step}: "
            f"loss {loss} | val {self.metric} {val:.4f} | {rate:.0f} samples/s",
            file=sys.stderr,
            flush=True,
        )
        self._t0, self._step0 = time.perf_counter(), state.global_step


class FaultPoints(TrainerCallback):
    """`train.saved` after each checkpoint save (tunesmith.faults: tests kill a worker of a
    launched run there and check that the next run resumes)."""

    def on_save(self, args, state, control, **kwargs):
        from tunesmith import faults

        faults.point("train.saved")
