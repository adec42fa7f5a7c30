"""The control loop and the publisher on their own: no sockets, a fake clock, a real cache.

What they add over the pure core: the publisher builds a group's snapshot on first ask,
rebuilds every known group on new inputs and tells watchers only of real changes, and keeps
a group's last good snapshot when a build fails; the control loop applies drains and policy
changes at once, a failing tick does not stop its task, and a round is ticked on as soon as
it lands (a tick that took no round does not hold the next round back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from envoy.config.core.v3 import health_check_pb2
from prometheus_client import CollectorRegistry

from heliostat.balance import static_views
from heliostat.policy import Policy, parse_policy
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.signals import Signal
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl

GROUP = NodeGroup(Role.GATEWAY, "us-east")
A, B = "127.0.0.1:9101", "127.0.0.2:9101"


def policy_of(*models: str, port: int = 9101, interval: str = "0.2s") -> Policy:
    text = "".join(
        f"    - name: {name}\n"
        f"      signals: {{interval: {interval}, timeout: 0.1s}}\n"
        "      endpoints:\n"
        f"        - {{address: '127.0.0.1:{port}', region: us-east}}\n"
        f"        - {{address: '127.0.0.2:{port}', region: us-east}}\n"
        for name in models
    )
    return parse_policy(
        "apiVersion: heliostat/v1\nkind: InferencePolicy\nmetadata: {name: t}\nspec:\n"
        "  regions: {us-east: {}}\n  gateway: {port: 10000, address: 127.0.0.1}\n"
        "  models:\n" + text
    )


def inputs(policy: Policy) -> Inputs:
    return Inputs(policy, static_views(policy))


def addresses(snapshot: Snapshot) -> set[str]:
    """The endpoints EDS offers for traffic (a drained one stays, marked DRAINING)."""
    found = set()
    for resource in snapshot.resources(TypeUrl.ENDPOINT).values():
        message = resource.message
        for locality in message.endpoints:  # type: ignore[attr-defined]
            for endpoint in locality.lb_endpoints:
                if endpoint.health_status == health_check_pb2.DRAINING:
                    continue
                socket = endpoint.endpoint.address.socket_address
                found.add(f"{socket.address}:{socket.port_value}")
    return found


def test_publisher_builds_on_first_ask_and_pushes_only_changes() -> None:
    cache = SnapshotCache()
    publisher = Publisher(cache, inputs(policy_of("llama")))
    first = publisher.snapshot_for(GROUP, "gw-1")
    assert publisher.snapshot_for(GROUP, "gw-2") is first, "built once per group"
    seen: list[Snapshot] = []
    publisher.watch(GROUP, seen.append)

    assert publisher.publish(inputs(policy_of("llama"))) == [], "same content: no push"
    assert seen == []
    assert publisher.publish(inputs(policy_of("llama", port=9102))) == [GROUP]
    assert [s.version for s in seen] == [cache.get(GROUP).version]  # type: ignore[union-attr]
    assert seen[0].version != first.version


def test_publisher_keeps_the_last_good_snapshot_when_a_build_fails() -> None:
    cache = SnapshotCache()
    publisher = Publisher(cache, inputs(policy_of("llama")))
    good = publisher.snapshot_for(GROUP, "gw-1")
    # Views of another policy: the plan has no cluster for qwen, translation refuses.
    broken = Inputs(policy_of("llama", "qwen"), static_views(policy_of("llama")))
    assert publisher.publish(broken) == []
    assert cache.get(GROUP) is good
    assert publisher.last_error is not None and GROUP.key in publisher.last_error
    assert publisher.publish(inputs(policy_of("llama", "qwen"))) == [GROUP], "recovers"


def loop_of(
    policy: Policy,
    signals: Callable[[], Mapping[tuple[str, str], Signal]] = dict,
) -> tuple[ControlLoop, Publisher, SnapshotCache]:
    cache = SnapshotCache()
    publisher = Publisher(cache, inputs(policy))
    publisher.snapshot_for(GROUP, "gw-1")
    clock = iter(range(1_700_000_000, 1_800_000_000))
    loop = ControlLoop(publisher, signals, CollectorRegistry(), clock=lambda: next(clock))
    return loop, publisher, cache


def test_a_drain_is_applied_at_once_and_undone() -> None:
    loop, _publisher, cache = loop_of(policy_of("llama"))
    loop.tick()
    assert addresses(cache.get(GROUP)) == {A, B}  # type: ignore[arg-type]
    assert loop.drain(frozenset({("llama", B)}), drained=True) == [GROUP.key]
    assert addresses(cache.get(GROUP)) == {A}  # type: ignore[arg-type]
    assert loop.describe()["drained"] == [f"llama/{B}"]
    assert loop.drain(frozenset({("llama", B)}), drained=False) == [GROUP.key]
    assert addresses(cache.get(GROUP)) == {A, B}  # type: ignore[arg-type]


def test_a_new_policy_is_the_one_the_publisher_holds() -> None:
    loop, publisher, cache = loop_of(policy_of("llama"))
    loop.tick()
    new = policy_of("llama", port=9102)
    assert loop.set_policy(new) == [GROUP.key]
    assert loop.policy is new and publisher.inputs.policy is new
    assert addresses(cache.get(GROUP)) == {"127.0.0.1:9102", "127.0.0.2:9102"}  # type: ignore[arg-type]


async def test_the_loop_ticks_when_signals_land_and_survives_a_failing_tick() -> None:
    calls = 0

    def signals() -> Mapping[tuple[str, str], Signal]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a source broke")
        return {}

    loop, _publisher, _cache = loop_of(policy_of("llama"), signals)
    task = asyncio.create_task(loop.run())
    try:
        loop.signals_landed("llama")
        deadline = time.monotonic() + 5
        while loop.ticks < 2:  # the first tick raised; the loop went on
            assert not task.done(), "the control loop's task died"
            assert time.monotonic() < deadline, "no tick after the failing one"
            loop.signals_landed("llama")
            await asyncio.sleep(0.05)
        assert calls >= 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(done: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_a_round_is_ticked_as_it_lands_even_after_a_tick_without_one() -> None:
    """Rounds land an interval apart give or take their scrape's jitter. A round a little
    later than one interval after the last tick must not be preceded by a fallback tick, and
    a tick that took no round (a drain) must not hold the next round back for the spacing
    between round ticks (half an interval: 0.5 s here)."""
    loop, _publisher, _cache = loop_of(policy_of("llama", interval="1s"))
    task = asyncio.create_task(loop.run())
    try:
        loop.signals_landed("llama")
        await _until(lambda: loop.ticks == 1, 5, "no tick on the first round")
        await asyncio.sleep(1.1)  # the next round, 0.1 s later than one interval
        assert loop.ticks == 1, "a fallback tick ran while the round was due"
        landed = time.monotonic()
        loop.signals_landed("llama")
        await _until(lambda: loop.ticks == 2, 5, "no tick on the second round")
        assert time.monotonic() - landed < 0.4, "the round's tick was held"

        await asyncio.sleep(0.55)  # past the spacing since the last round's tick
        loop.drain(frozenset({("llama", B)}), drained=True)  # a tick with no new round
        assert loop.ticks == 3
        landed = time.monotonic()
        loop.signals_landed("llama")
        await _until(lambda: loop.ticks == 4, 5, "no tick on the round after the drain")
        assert time.monotonic() - landed < 0.4, "the drain's tick held the round back"
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_rounds_the_loop_still_ticks() -> None:
    """No round lands (a source stuck): the loop ticks anyway, so staleness is noticed."""
    loop, _publisher, _cache = loop_of(policy_of("llama"))
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: loop.ticks >= 2, 5, "no tick without rounds")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
