"""The journal turns the endpoints whose state moved between two ticks into events, one
each, in key order (it reads the law's columns through `state_changes`)."""

from __future__ import annotations

from heliostat.balance import compute
from heliostat.runtime.journal import Journal
from tests.balance.helpers import MODEL, T0, addresses, policy_of, signal


def test_an_endpoint_that_goes_stale_or_saturates_is_one_event_each() -> None:
    policy = policy_of({"us-east": 3, "eu-west": 2, "ap-southeast": 1})
    everyone = addresses(policy)
    journal = Journal(clock=lambda: T0)

    def tick(now: float, kv: dict[str, float], silent: set[str]) -> None:
        signals = {
            (MODEL, a): signal(a, kv=kv.get(a, 0.3), at=now) for a in everyone if a not in silent
        }
        journal.observe(compute(policy, signals, journal._last, now)[1])

    tick(T0, {}, set())
    tick(T0 + 2, {}, set())
    assert journal.recent() == []
    hot, quiet = everyone[3], everyone[0]
    tick(T0 + 12, {hot: 2.5}, {quiet})
    events = [
        (e["endpoint"], e["before"], e["after"])
        for e in journal.recent()
        if e["event"] == "endpoint_state_changed"
    ]
    assert events == sorted([(hot, "healthy", "saturated"), (quiet, "healthy", "stale")])
    seen = len(journal.recent())
    tick(T0 + 14, {hot: 2.5}, {quiet})
    assert not [e for e in journal.recent(seen) if e["event"] == "endpoint_state_changed"]
