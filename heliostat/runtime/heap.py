"""Keep the garbage collector off what lives as long as the policy.

CPython's cyclic collector scans every tracked object of a generation when it runs; the
oldest generation runs whenever a quarter more objects reached it since its last run. A
control tick replaces every endpoint's state (tens of thousands of objects at a large fleet),
so a full collection came every other tick, and it walked the modules, the policy (one
pydantic model per endpoint) and every other start-up object each time: 20 ms of a
130 ms tick at 10,000 endpoints (bench/scale.py, profiled with gc callbacks).

`settle` moves everything alive into the permanent generation, which collections skip
(`gc.freeze`). It is called once the policy is in force (at start and after a reload), so
what a tick allocates is all the collector looks at. Frozen objects are still freed by
reference counting; cyclic garbage among them would not be, so each settle first thaws
and collects what the last one froze: a reload leaks nothing that a collection would have
freed.

What a tick allocates is acyclic (records, tuples, bytes) and freed by reference counting
a tick later, yet it lives long enough to reach the oldest generation: at 50,000 endpoints
a tick set off 2.5 full collections of ~125 ms each. `settle` also makes the oldest
generation wait for OLDEST_AFTER collections of the middle one instead of 10 (CPython
still requires a quarter more objects than at its last run): a full collection then comes
about every 20 ticks at 50,000 endpoints and every few hundred at 10,000.

The young generation is collected once 700 more tracked objects were allocated than freed
(CPython's count is net of what reference counting freed). A push to 1,000 streams keeps
every stream's response, coroutine frames and call state alive at once, so that count
passed 700 every few streams: each young collection walked objects still in use and moved
them to the middle generation, walked again every tenth time (py-spy --native of serve
during such a push: `gc_collect_main` in 7-21% of samples). `settle` sets the young
threshold to YOUNG_AFTER. Measured 2026-12-06 on 2 shared cores (load 2.2-6.7), a
fresh serve per run, settings interleaved, `bench/fanout.py`'s cases at 1,000 streams with
4 changes each; serve's CPU (/proc/PID/stat) from before the first change until the last
one's responses were in, per change (its scrapes and ticks meanwhile included); medians.
Sweep (5 runs each) 700 -> 50,000: delta 348 -> 315 ms, delta-settled 723 -> 665 ms, SotW
310 -> 293 ms, ACK p99 447 -> 371, 759 -> 513, 311 -> 305 ms; 10,000 was in between or no
better (350, 670, 328 ms), 2,000 worse (2 runs). Main against this code (3 runs each): 373
-> 353, 760 -> 715, 373 -> 328 ms. serve's peak RSS with 1,000 streams did not move (delta
163.5 -> 163.1 MB, SotW 150.7 -> 151.1 MB).

The tick (`bench/measure/tick_parts.py`) gains where what it allocates dies within the
tick: 10,000 endpoints x 3, 10% changed 28.4 -> 27.5 ms (collections 4.9 ms -> none), all
changed 102 -> 94 ms (9.7 ms -> none); 50,000 x 6, 10% changed 187 -> 160 ms. It loses
where a tick holds far more new objects alive than YOUNG_AFTER: at 50,000 x 6 with every
endpoint changed a young collection then walks 50,000 live objects out of cache instead of
700 just allocated, and the collections took 84-95 ms of a tick instead of 57-65 (tick
518-572 -> 557-628 ms, 3 runs each); 10,000 and 20,000 were worse still (92-129 ms).
Every endpoint's weight moving in one tick is rare at that size; a push to every stream
comes with each change, so the trade is kept. What it costs in memory is time for cyclic
garbage, not live objects: a cycle that dies young waits for up to YOUNG_AFTER net new
objects instead of 700 (a few MB at worst).

A tick that holds more new objects alive than a young collection takes (`ticking`): a
control tick builds every moved endpoint's state, view and EDS entry, and at 50,000 x 6
with every endpoint changed it ends with ~300,000 net new tracked objects, all alive until
the next tick replaces them. Collected as they come, every one of them was walked by young
collections (4.7 a tick) and again by middle ones: 54 + 41 ms of a 648 ms tick
(`bench/measure/tick_parts.py 50000 6 1 3`). They are acyclic and die by reference
counting, so no collection of them can free anything: `ticking` keeps the collector off
for the tick and, when the tick left more than YOUNG_AFTER net new objects, freezes what
is alive then (`gc.freeze` moves the generations' lists, whatever their length) instead
of walking it. Frozen objects are freed by reference counting as before; a cycle among
them would not be collected until a thaw, so `OldestGeneration.tend` then thaws, collects
and freezes again (a settle) once it is due: such garbage still lives a minute at most, at
the cost of that minute's full collection walking the policy too (`trim`'s collection after
a wave of streams does not reach what a tick froze either: such a stream's cycles wait for
that thaw). Only a settled heap is frozen by ticks (serve's, the benchmark's): a process that
never settled keeps CPython's collector as it is. A tick that leaves fewer
new objects enables the collector as it was: its young collection comes when it would
have (CPython counts net new objects whether it is on or not), a moment later.

What dies old (a stream that ran for hours, then closed) would wait for the next full
collection, which a small fleet reaches only after an hour of ticks:
`OldestGeneration.tend`, called by the control loop between ticks, runs one when none ran
for FULL_EVERY_S, so such garbage lives a minute at most, at the cost of one full
collection a minute (~125 ms at 50,000 endpoints: 4 ms a tick at 2 s ticks).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

YOUNG_AFTER = 50_000
OLDEST_AFTER = 1000


def settle() -> None:
    """Collect, then freeze what is alive; young collections and full ones rarer (see the
    module docstring)."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_AFTER, middle, OLDEST_AFTER)
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _frozen_by_ticks[0] = False
    _settled[0] = True


def unsettle(thresholds: tuple[int, int, int]) -> None:
    """The collector as `settle` found it: thawed, with `thresholds`, and ticks freezing
    nothing (for a benchmark or a test that settled in a process that goes on)."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    _settled[0] = False
    _frozen_by_ticks[0] = False


# Whether the heap is managed here (`settle` ran): only then does a tick freeze (a process
# that never settled, a test's, keeps CPython's collector as it is).
_settled = [False]
# Whether a tick froze what it left alive since the last settle (`ticking`): then a cycle
# may wait in the permanent generation, and only a thaw reaches it.
_frozen_by_ticks = [False]


@contextlib.contextmanager
def ticking() -> Iterator[None]:
    """The collector off for a control tick; what the tick left alive frozen when it is
    more than a young collection takes and the heap is settled (see the module
    docstring)."""
    enabled = gc.isenabled()
    gc.disable()
    before = gc.get_count()[0]
    try:
        yield
    finally:
        # Net new objects of the tick itself: what streams left young between ticks is not
        # the tick's, and may hold their cycles (frozen, they would wait for a thaw).
        made = gc.get_count()[0] - before
        if _settled[0] and made > gc.get_threshold()[0] > 0:
            gc.freeze()
            _frozen_by_ticks[0] = True
        if enabled:
            gc.enable()


def frozen_by_ticks() -> bool:
    """Whether a tick froze what it left alive since the last settle."""
    return _frozen_by_ticks[0]


FULL_EVERY_S = 60.0


class OldestGeneration:
    """Runs a full collection when none ran for `every_s` (see the module docstring)."""

    def __init__(
        self, every_s: float = FULL_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._runs = _full_runs()
        self._since = clock()

    def tend(self) -> bool:
        """Collect if due; True when it did."""
        now = self._clock()
        runs = _full_runs()
        # One ran by itself: the clock starts again, unless a tick froze something since
        # (CPython's own full collection does not reach the frozen: it would reset the
        # clock every minute and a cycle a tick froze would wait for ever).
        if runs != self._runs and not _frozen_by_ticks[0]:
            self._runs, self._since = runs, now
            return False
        if now - self._since < self._every_s:
            return False
        collect_all()
        self._runs, self._since = _full_runs(), now
        return True


def collect_all() -> None:
    """A full collection that reaches what ticks froze (`ticking`) too: thaw, collect and
    freeze again when a tick froze anything since the last settle, else a plain one (what
    `settle` froze is then walked as well: the price of reaching the tick's cycles)."""
    if _frozen_by_ticks[0]:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _frozen_by_ticks[0] = False
    else:
        gc.collect()


def _full_runs() -> int:
    return int(gc.get_stats()[2]["collections"])
