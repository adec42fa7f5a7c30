"""The judge of every phase: ok or not, and a one-line detail, from measurements only.

Each judge looks at the phase's *settled* part (`Phase.settled_at` onwards): the control law
reacts over seconds by design, and grading its transient would grade the EWMA, not the claim.
Failures are graded over the whole phase. A request that was running when the outage
killed its replica counts against nobody but the outage, which reports how many there were;
any other failed request, in any phase, is a failure of that phase.

The thresholds leave margin for a busy machine: they separate "works" from "broken", not
"fast" from "slow".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heliostat.demo.observe import (
    RequestRecord,
    Sample,
    push_rate,
    served,
    share_changes,
    shares,
    weight_changes,
    window,
)
from heliostat.demo.story import AP_SOUTHEAST, EU_WEST, MAX_SHARE, REGIONS, US_EAST, Phase

LOCAL_SHARE = 0.95  # "stays local": at least this share served in the gateway's own region
MIN_REQUESTS = 15  # fewer measured requests than this in a window is too little to judge
OVERFLOW_VISIBLE = 0.05  # a surge must actually lend at least this share
OVERFLOW_MARGIN = 0.05  # sampling noise allowed above max_share
FAILOVER_SHARE = 0.95  # after the settle time, this share of us-east's users served in eu-west
# "No flapping", after a comeback. Endpoint weights (sampled at 2/s in every gateway) and
# overflow shares (heliostat's published decisions): one that goes down and up again (one
# reversal) may just be settling, one that turns round twice or more is flapping. A flapping
# law also pushes on most ticks: up to 3 node groups x 2 ticks/s = 6 pushes/s here; a
# settled one pushes now and then.
RAMP_ALLOWANCE_S = 5.0  # doubling from weight 1 to 100 takes 7 ticks of 0.5 s
MIN_QUIET_S = 3.0
MAX_PUSHES_PER_S = 1.5
MAX_TURNS = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Evidence:
    samples: Sequence[Sample]
    requests: Sequence[RequestRecord]
    # "outage": (just before the kill, just after the process was gone);
    # "restore": (restart began, every replica answered its health check)
    events: Mapping[str, tuple[float, float]]


def judge(phase: Phase, evidence: Evidence) -> Verdict:
    judges = {
        "steady": judge_steady,
        "surge": judge_surge,
        "outage": judge_outage,
        "recovery": judge_recovery,
    }
    return judges[phase.name](phase, evidence)


def _pct(x: float) -> str:
    """50% rather than 50.0%, but 23.5% rather than 24%: the judged bounds are tight."""
    tenths = round(x * 1000)
    return f"{x:.0%}" if tenths % 10 == 0 else f"{x:.1%}"


def of_phase(phase: Phase, requests: Sequence[RequestRecord]) -> list[RequestRecord]:
    return [r for r in requests if phase.contains(r.at)]


def unexplained_failures(phase: Phase, evidence: Evidence) -> list[RequestRecord]:
    """Failed requests of the phase that were not running at the outage's kill."""
    kill = evidence.events.get("outage")
    return [
        r
        for r in of_phase(phase, evidence.requests)
        if not r.ok and (kill is None or not r.in_flight_at(*kill))
    ]


def _failures_text(failed: Sequence[RequestRecord]) -> str:
    if not failed:
        return "0 failed"
    kinds = Counter(r.error or str(r.status) for r in failed)
    return f"{len(failed)} failed ({', '.join(f'{k} x{n}' for k, n in kinds.most_common())})"


def _settled(phase: Phase, evidence: Evidence) -> tuple[Sample, Sample] | None:
    return window(evidence.samples, phase.settled_at, phase.end)


def judge_steady(phase: Phase, evidence: Evidence) -> Verdict:
    pair = _settled(phase, evidence)
    if pair is None:
        return Verdict(phase.name, False, "no measurements in the settled window")
    matrix = served(*pair)
    problems: list[str] = []
    parts: list[str] = []
    for origin in REGIONS:
        counts = matrix.get(origin, Counter())
        total = sum(counts.values())
        own = shares(counts).get(origin, 0.0)
        parts.append(f"{origin} {_pct(own)} (n={total})")
        if total < MIN_REQUESTS:
            problems.append(f"too few {origin} requests to judge ({total})")
        elif own < LOCAL_SHARE:
            problems.append(f"{origin} kept only {_pct(own)} local")
    failed = unexplained_failures(phase, evidence)
    if failed:
        problems.append(_failures_text(failed))
    detail = f"served in their own region: {', '.join(parts)}; {_failures_text(failed)}"
    return Verdict(phase.name, not problems, _with(detail, problems))


def judge_surge(phase: Phase, evidence: Evidence) -> Verdict:
    pair = _settled(phase, evidence)
    if pair is None:
        return Verdict(phase.name, False, "no measurements in the settled window")
    matrix = served(*pair)
    surge = matrix.get(AP_SOUTHEAST, Counter())
    total = sum(surge.values())
    lent = shares(surge)
    to_eu, to_us = lent.get(EU_WEST, 0.0), surge.get(US_EAST, 0)
    rescuer = matrix.get(EU_WEST, Counter())
    rescuer_home = shares(rescuer).get(EU_WEST, 0.0)
    problems: list[str] = []
    if total < MIN_REQUESTS:
        problems.append(f"too few {AP_SOUTHEAST} requests to judge ({total})")
    else:
        if to_eu < OVERFLOW_VISIBLE:
            problems.append(f"no overflow to {EU_WEST} ({_pct(to_eu)})")
        if to_eu > MAX_SHARE + OVERFLOW_MARGIN:
            problems.append(f"overflow {_pct(to_eu)} above max_share {MAX_SHARE:.0%}")
        if to_us:
            problems.append(f"{to_us} requests went to {US_EAST}, beyond the network budget")
    if sum(rescuer.values()) >= MIN_REQUESTS and rescuer_home < LOCAL_SHARE:
        problems.append(f"{EU_WEST}'s own users kept only {_pct(rescuer_home)} local")
    failed = unexplained_failures(phase, evidence)
    if failed:
        problems.append(_failures_text(failed))
    decided = pair[1].sends.get(AP_SOUTHEAST, {}).get(EU_WEST)
    decision = "" if decided is None else f" (heliostat publishes {_pct(decided)})"
    detail = (
        f"{AP_SOUTHEAST} overflow: {_pct(to_eu)} to {EU_WEST}{decision}, {to_us} to {US_EAST} "
        f"(n={total}, max_share {MAX_SHARE:.0%}); {EU_WEST}'s own users {_pct(rescuer_home)} "
        f"local; {_failures_text(failed)}"
    )
    return Verdict(phase.name, not problems, _with(detail, problems))


def judge_outage(phase: Phase, evidence: Evidence) -> Verdict:
    kill = evidence.events.get("outage")
    if kill is None:
        return Verdict(phase.name, False, f"{US_EAST}'s fleet was never killed")
    casualties = [r for r in evidence.requests if r.origin == US_EAST and r.in_flight_at(*kill)]
    lost = [r for r in casualties if not r.ok]
    failed = unexplained_failures(phase, evidence)
    since = [
        r
        for r in of_phase(phase, evidence.requests)
        if r.origin == US_EAST and r.started >= kill[1]
    ]
    rescued = [r for r in since if r.ok and r.served_in == EU_WEST]
    pair = _settled(phase, evidence)
    matrix = served(*pair) if pair else {}
    home = matrix.get(US_EAST, Counter())
    total = sum(home.values())
    in_eu = shares(home).get(EU_WEST, 0.0)
    problems: list[str] = []
    if total < MIN_REQUESTS:
        problems.append(f"too few {US_EAST} requests measured after the failover ({total})")
    elif in_eu < FAILOVER_SHARE:
        problems.append(f"only {_pct(in_eu)} of {US_EAST}'s users served in {EU_WEST}")
    if failed:
        problems.append(_failures_text(failed) + " beyond those in flight at the kill")
    hosts = pair[1].gateways.get(US_EAST, {}) if pair else {}
    still_healthy = [a for a, h in hosts.items() if h.region == US_EAST and h.healthy]
    marked = [a for a, h in hosts.items() if h.region == US_EAST and not h.healthy]
    if still_healthy:
        problems.append(f"{US_EAST}'s gateway still has {len(still_healthy)} dead hosts healthy")
    detail = (
        f"{len(lost)} of {len(casualties)} {US_EAST} requests in flight at the kill failed, "
        f"{len(failed)} others; {len(rescued)} of {len(since)} sent after it answered from "
        f"{EU_WEST}; settled: {_pct(in_eu)} of {US_EAST}'s users served in {EU_WEST} "
        f"(n={total}); its gateway marks {len(marked)} {US_EAST} hosts unhealthy"
    )
    return Verdict(phase.name, not problems, _with(detail, problems))


def judge_recovery(phase: Phase, evidence: Evidence) -> Verdict:
    restore = evidence.events.get("restore")
    if restore is None:
        return Verdict(phase.name, False, f"{US_EAST}'s fleet was never restarted")
    # The comeback ramp (weights doubling per tick from the floor) is the law working, not
    # flapping: the quiet stretch starts once it had time to finish, however slow the restart.
    quiet_from = max(phase.settled_at, restore[1] + RAMP_ALLOWANCE_S)
    pair = window(evidence.samples, quiet_from, phase.end)
    if pair is None or pair[1].t - pair[0].t < MIN_QUIET_S:
        return Verdict(
            phase.name,
            False,
            f"{US_EAST} came back too late to judge ({restore[1] - restore[0]:.1f} s restart, "
            f"{max(0.0, phase.end - quiet_from):.1f} s left after its ramp)",
        )
    matrix = served(*pair)
    home = matrix.get(US_EAST, Counter())
    total = sum(home.values())
    local = shares(home).get(US_EAST, 0.0)
    rate = push_rate(*pair)
    comeback = [s for s in evidence.samples if restore[1] <= s.t <= phase.end]
    changes, weight_turns = weight_changes(comeback, REGIONS)
    share_moves, share_turns = share_changes(comeback)
    turns = max(weight_turns, share_turns)
    problems: list[str] = []
    if total < MIN_REQUESTS:
        problems.append(f"too few {US_EAST} requests to judge ({total})")
    elif local < LOCAL_SHARE:
        problems.append(f"only {_pct(local)} of {US_EAST}'s users back home")
    if rate is None:
        problems.append("heliostat's push counter could not be read")
    elif rate > MAX_PUSHES_PER_S:
        problems.append(f"{rate:.1f} pushes/s after the ramp")
    if weight_turns > MAX_TURNS:
        problems.append(f"an endpoint weight turned round {weight_turns} times: flapping")
    if share_turns > MAX_TURNS:
        problems.append(f"an overflow share turned round {share_turns} times: flapping")
    failed = unexplained_failures(phase, evidence)
    if failed:
        problems.append(_failures_text(failed))
    pushes = "?" if rate is None else f"{rate:.2f}"
    detail = (
        f"{US_EAST} fleet up {restore[1] - restore[0]:.1f} s after the restart; since then "
        f"{changes} weight changes across the gateways and {share_moves} overflow share "
        f"changes, at most {turns} reversal(s) of any one; last "
        f"{pair[1].t - pair[0].t:.0f} s: {_pct(local)} of {US_EAST}'s users served at home "
        f"(n={total}), {pushes} pushes/s; {_failures_text(failed)}"
    )
    return Verdict(phase.name, not problems, _with(detail, problems))


def _with(detail: str, problems: Sequence[str]) -> str:
    return detail if not problems else f"{'; '.join(problems)} -- {detail}"
