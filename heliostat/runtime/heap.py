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
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then freeze what is alive (see the module docstring)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
