"""The garbage collector's settings for pipeline processes (tunesmith/gcpolicy.py)."""

from __future__ import annotations

import gc
import weakref

from tunesmith import gcpolicy


class Node:
    """An object that can sit in a reference cycle and be watched through a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_frozen_objects_are_skipped_inside_and_collected_after():
    watched = cycle()  # cyclic garbage already: only the collector frees it
    gc.disable()  # no automatic collection may run between here and the explicit ones
    try:
        with gcpolicy.frozen():
            assert gc.get_freeze_count() > 0
            gc.collect()
            assert watched() is not None, "a frozen object was scanned"
            young = cycle()
            gc.collect()
            assert young() is None, "objects made inside must still be collected"
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert watched() is None, "unfreezing must hand old garbage back to the collector"
    finally:
        gc.enable()


def test_nested_frozen_unfreezes_only_at_the_outermost_exit():
    with gcpolicy.frozen():
        with gcpolicy.frozen():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_pipeline_thresholds_are_set_inside_and_restored():
    before = gc.get_threshold()
    with gcpolicy.pipeline_thresholds():
        assert gc.get_threshold() == gcpolicy.PIPELINE_THRESHOLDS
    assert gc.get_threshold() == before


def test_the_command_runs_under_the_pipeline_thresholds(monkeypatch):
    from tunesmith import cli

    before, seen = gc.get_threshold(), []

    def app(standalone_mode: bool) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(cli, "app", app)
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code == 0
    assert seen == [gcpolicy.PIPELINE_THRESHOLDS]
    assert gc.get_threshold() == before
