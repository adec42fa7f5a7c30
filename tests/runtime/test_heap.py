"""heap.settle: what is alive leaves the collector's scans; cyclic garbage is freed first."""

from __future__ import annotations

import gc
import weakref

from heliostat.runtime import heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_frees_cycles_then_freezes_what_lives() -> None:
    thresholds = gc.get_threshold()
    middle = thresholds[1]
    try:
        lost = _Node()
        lost.other = _Node()
        lost.other.other = lost  # a cycle: only the collector frees it
        gone = weakref.ref(lost)
        del lost
        kept = _Node()
        heap.settle()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen: out of every generation
        # A second settle thaws first: a cycle frozen last time is freed once garbage.
        kept.other = _Node()
        kept.other.other = kept
        held = weakref.ref(kept)
        del kept
        heap.settle()
        assert held() is None
        # The young generation waits for YOUNG_AFTER net new objects, the oldest for
        # OLDEST_AFTER collections of the middle one; the middle keeps CPython's pace.
        assert gc.get_threshold() == (heap.YOUNG_AFTER, middle, heap.OLDEST_AFTER)
    finally:
        heap.unsettle(thresholds)


def test_a_full_collection_runs_when_none_ran_for_a_minute() -> None:
    gc.disable()  # no collection of its own in between: only what the test runs
    try:
        now = [0.0]
        oldest = heap.OldestGeneration(every_s=60.0, clock=lambda: now[0])
        now[0] = 59.0
        assert not oldest.tend()
        now[0] = 61.0
        lost = _Node()
        lost.other = lost
        gone = weakref.ref(lost)
        del lost
        assert oldest.tend()
        assert gone() is None  # the collection freed it
        now[0] = 90.0
        assert not oldest.tend()  # the clock started again at 61
        gc.collect()  # one that ran by itself also restarts it
        now[0] = 125.0
        assert not oldest.tend()
        now[0] = 186.0
        assert oldest.tend()
    finally:
        gc.enable()


def test_a_tick_that_leaves_many_objects_alive_freezes_them_and_tend_thaws() -> None:
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        gc.set_threshold(1000, thresholds[1], heap.OLDEST_AFTER)
        with heap.ticking():
            assert not gc.isenabled()  # no collection walks what the tick builds
            kept = [_Node() for _ in range(5000)]  # more than a young collection takes
            lost = _Node()
            lost.other = _Node()
            lost.other.other = lost  # a cycle, alive at the tick's end
        assert gc.isenabled()
        assert heap.frozen_by_ticks()
        assert gc.get_count()[0] < 1000  # frozen: the young generation starts empty
        assert not any(o is kept[0] for o in gc.get_objects())
        gone = weakref.ref(lost)
        del lost
        gc.collect()
        assert gone() is not None  # frozen: no collection reaches it ...
        now = [0.0]
        oldest = heap.OldestGeneration(every_s=60.0, clock=lambda: now[0])
        now[0] = 61.0
        assert oldest.tend()
        assert gone() is None  # ... until tend thaws, collects and freezes again
        assert not heap.frozen_by_ticks()
        assert gc.get_freeze_count() > 0 and kept[0].other is None
    finally:
        heap.unsettle(thresholds)


def test_a_small_tick_or_an_unsettled_heap_freezes_nothing() -> None:
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        gc.set_threshold(1000, thresholds[1], heap.OLDEST_AFTER)
        frozen = gc.get_freeze_count()
        with heap.ticking():
            small = [_Node() for _ in range(10)]
        assert gc.get_freeze_count() == frozen and not heap.frozen_by_ticks()
        assert any(o is small[0] for o in gc.get_objects())  # still the collector's
        heap._settled[0] = False  # a process that never settled: CPython's collector
        with heap.ticking():
            many = [_Node() for _ in range(5000)]
        assert gc.get_freeze_count() == frozen and any(o is many[0] for o in gc.get_objects())
        gc.disable()
        with heap.ticking():  # a collector that was off stays off
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        heap.unsettle(thresholds)


def test_what_a_tick_froze_is_reached_by_collect_all_and_by_tend_despite_other_collections() -> (
    None
):
    """A cycle a tick froze is freed by `collect_all` (trim's collection after a wave of
    streams), and `tend` thaws within its minute even when CPython ran full collections of
    its own meanwhile (they do not reach the frozen: resetting the clock on them would let
    the cycle wait for ever)."""
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        gc.set_threshold(1000, thresholds[1], heap.OLDEST_AFTER)

        def tick_leaving_a_cycle() -> weakref.ref[_Node]:
            with heap.ticking():
                kept = [_Node() for _ in range(5000)]
                lost = _Node()
                lost.other = _Node()
                lost.other.other = lost
            assert heap.frozen_by_ticks() and kept
            return weakref.ref(lost)

        gone = tick_leaving_a_cycle()
        gc.collect()
        assert gone() is not None
        heap.collect_all()
        assert gone() is None and not heap.frozen_by_ticks()

        now = [0.0]
        oldest = heap.OldestGeneration(every_s=60.0, clock=lambda: now[0])
        gone = tick_leaving_a_cycle()
        now[0] = 30.0
        gc.collect()  # CPython's own, which does not reach the frozen
        assert not oldest.tend()
        now[0] = 61.0
        assert oldest.tend()
        assert gone() is None
    finally:
        heap.unsettle(thresholds)


def test_objects_made_before_a_tick_do_not_make_it_freeze() -> None:
    """Only the tick's own net new objects count: what streams left young between ticks
    stays with the collector (their cycles would otherwise wait frozen)."""
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        gc.set_threshold(100_000, thresholds[1], heap.OLDEST_AFTER)
        between = [_Node() for _ in range(5000)]
        gc.set_threshold(1000, thresholds[1], heap.OLDEST_AFTER)
        frozen = gc.get_freeze_count()
        with heap.ticking():
            small = [_Node() for _ in range(10)]
        assert gc.get_freeze_count() == frozen and not heap.frozen_by_ticks()
        assert any(o is between[0] for o in gc.get_objects()) and small
    finally:
        heap.unsettle(thresholds)
