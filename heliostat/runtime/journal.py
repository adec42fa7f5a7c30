"""The control law's decisions as events: what changed between two ticks, logged and kept.

The law itself is pure and says nothing; after each tick this compares the new state with
the previous one and turns the differences an operator cares about into events with stable
names: `endpoint_state_changed` (healthy, saturated, unhealthy, draining...),
`overflow_started` / `overflow_ended` (a region begins or stops lending its users to
another), `refusal_started` / `refusal_ended`. Each is logged once and the last few hundred
are kept for the status page, so "what just happened" needs no log search.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from heliostat.balance import ControlState
from heliostat.balance.state import state_changes

log = structlog.get_logger("heliostat.journal")

KEPT = 200


class Journal:
    def __init__(self, clock: Callable[[], float] = time.time, kept: int = KEPT) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=kept)
        self._clock = clock
        self._last: ControlState | None = None
        self._seq = 0

    def record(self, event: str, level: str = "info", **fields: Any) -> None:
        self._seq += 1
        self._events.append({"seq": self._seq, "at": self._clock(), "event": event, **fields})
        getattr(log, level)(event, **fields)

    def recent(self, after: int = 0) -> list[dict[str, Any]]:
        """Events newest last; `after` a sequence number already seen."""
        return [e for e in self._events if e["seq"] > after]

    def observe(self, state: ControlState) -> None:
        """A tick landed: record what changed since the last one."""
        before, self._last = self._last, state
        if before is None:
            return
        for (model, address), old, endpoint in state_changes(state.endpoints, before.endpoints):
            self.record(
                "endpoint_state_changed",
                level="warning" if endpoint.state == "unhealthy" else "info",
                model=model,
                endpoint=address,
                region=endpoint.view.region,
                before=old.state,
                after=endpoint.state,
                weight=endpoint.published,
            )
        for name, decided in sorted(state.models.items()):
            previous = before.models.get(name)
            if previous is None:
                continue
            for region, now in sorted(decided.regions.items()):
                was = previous.regions.get(region)
                old_shares = was.shares if was is not None else {}
                new_shares = now.shares
                for peer in sorted(set(old_shares) | set(new_shares)):
                    if peer in new_shares and peer not in old_shares:
                        self.record(
                            "overflow_started",
                            model=name,
                            from_region=region,
                            to_region=peer,
                            share=new_shares[peer],
                        )
                    elif peer in old_shares and peer not in new_shares:
                        self.record(
                            "overflow_ended", model=name, from_region=region, to_region=peer
                        )
            for region, refusal in sorted(decided.refusals.items()):
                was_refusing = previous.refusals.get(region)
                active = refusal.active
                if active != (was_refusing.active if was_refusing is not None else False):
                    self.record(
                        "refusal_started" if active else "refusal_ended",
                        level="warning" if active else "info",
                        model=name,
                        region=region,
                        interactive=refusal.interactive.published,
                        batch=refusal.batch.published,
                        detail=refusal.detail,
                    )
