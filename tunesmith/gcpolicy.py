"""Python's cyclic garbage collector, set for a process that imports ~1M long-lived objects
(torch, transformers, Prefect, MLflow, pandas, GX) and then runs a few long steps.

With CPython's default thresholds (700, 10, 10) a full collection runs each time the
objects that survived into the oldest generation grow by a quarter since the last one, so
importing a million of them costs a geometric series of full scans: in a `tunesmith run`
with the data steps cached, 12-13 full collections took 3.8-4.6 s of the run (0.6-0.9 s
each at the end; measured with `gc.callbacks`, 2026-12-03). Two changes, both stdlib and
both undone on the way out:

- `pipeline_thresholds()`: (50_000, 10, 100). The young generation is collected every
  50,000 net allocations instead of 700 (cycles that die young still go there), and a full
  collection needs 100 middle-generation ones first (~50M allocations), so imports no
  longer trigger them. GC time of that run: 1.7-1.8 s instead of 4.6 s.
- `frozen()`: `gc.freeze()` for the objects alive when training starts. transformers'
  Trainer runs a full `gc.collect()` as each `train()` begins (accelerate's
  `free_memory`), which scanned all of them: 0.55-0.65 s inside a flow (~900k objects),
  0.25-0.35 s in a bare training script (~450k). Frozen objects are skipped until
  `unfreeze()`, so nothing is leaked: anything that died meanwhile is collected later.

Both together: 1.06 s of GC in that run; 1.39 s instead of 5.87 s in a run on new data
(every step runs); peak RSS unchanged within 5% (docs/benchmarks.md, section 3).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

PIPELINE_THRESHOLDS = (50_000, 10, 100)
# CPython's own, for `tunesmith serve`: a process that lives for weeks should collect its
# old cyclic garbage on CPython's schedule; its flow runs are processes of their own.
CPYTHON_THRESHOLDS = (700, 10, 10)
_frozen_depth = 0  # nested frozen(): only the outermost unfreezes


@contextmanager
def thresholds(values: tuple[int, int, int]) -> Iterator[None]:
    """The collector's thresholds set to `values` inside, restored afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(*values)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def pipeline_thresholds() -> AbstractContextManager[None]:
    """`thresholds(PIPELINE_THRESHOLDS)`: for the command and the retrain flow."""
    return thresholds(PIPELINE_THRESHOLDS)


@contextmanager
def frozen() -> Iterator[None]:
    """Collections inside skip every object alive on entry (gc.freeze/unfreeze)."""
    global _frozen_depth
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()
