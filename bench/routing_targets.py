"""The targets of issue 10, checked against one routing run: met, not met, or not applicable.

Read from routing.json's content alone (no process, no clock), so the report can check any
kept run. heliostat is compared with every baseline of the same run, on every scenario:

- **SLO**: heliostat's SLO attainment >= every baseline's minus 1 point;
- **goodput**: heliostat's goodput >= every baseline's;
- **TTFT p99**: heliostat's <= 1.1 x the best (lowest) baseline's;
- **admitted p99** (scenarios where, in some phase, every region with replicas is offered more
  than its capacity: the planet is full): the TTFT p99 of heliostat's admitted requests <= SLO;
- **prefix hits, SLO and TTFT p50 vs picker** (shared_prefix workloads): hits >= ring_hash's
  (hashing with no load bound), SLO attainment and TTFT p50 no worse than the picker's;
- **protection** (scenarios with a surge: some, not all, regions offered more than their
  capacity after a phase where none was): each rescuing region (not overloaded, within the
  budget of an overloaded one) keeps its own users' SLO attainment during the surge within
  1 point of theirs in the phase before it;
- **stability** (scenarios whose offered load is constant): no endpoint weight or share of
  heliostat reverses more than twice a minute.

A baseline missing from the run, or a figure missing from a file, makes its check "n/a", never
a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BASELINES = ("round_robin", "least_request", "ring_hash", "envoy_orca", "picker")
SLO_SLACK = 0.01
P99_FACTOR = 1.1
PROTECTION_SLACK = 0.01
MAX_REVERSALS_PER_MIN = 2.0

Check = dict[str, str]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:g} ms"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "not met"


def _check(scenario: str, target: str, heliostat: str, reference: str, ok: bool | None) -> Check:
    return {
        "scenario": scenario,
        "target": target,
        "heliostat": heliostat,
        "reference": reference,
        "verdict": _verdict(ok),
    }


def _figure(by_policy: Mapping[str, Any], policy: str, key: str) -> float | None:
    entry = by_policy.get(policy)
    return _num(entry.get(key)) if isinstance(entry, Mapping) else None


def _best(by_policy: Mapping[str, Any], key: str, highest: bool) -> tuple[str, float] | None:
    found = [(p, v) for p in BASELINES if (v := _figure(by_policy, p, key)) is not None]
    if not found:
        return None
    return max(found, key=lambda x: x[1]) if highest else min(found, key=lambda x: x[1])


def evaluate(result: Mapping[str, Any]) -> list[Check]:
    """Every applicable target on every scenario of a routing result."""
    workloads = result.get("workloads")
    if not isinstance(workloads, Mapping):
        return []
    setups = result.get("setup", {}).get("scenarios", {})
    details = result.get("details", {})
    checks: list[Check] = []
    for name, by_policy in workloads.items():
        if not isinstance(by_policy, Mapping):
            continue
        setup = setups.get(name, {}) if isinstance(setups, Mapping) else {}
        detail = details.get(name, {}) if isinstance(details, Mapping) else {}
        checks += _baselines(name, by_policy)
        checks += _planet_full(name, by_policy, setup)
        checks += _shared_prefix(name, by_policy, setup)
        checks += _protection_checks(name, setup, detail)
        checks += _stability(name, by_policy, setup)
    return checks


def _baselines(name: str, by_policy: Mapping[str, Any]) -> list[Check]:
    checks = []
    mine = _figure(by_policy, "heliostat", "slo_attainment")
    best = _best(by_policy, "slo_attainment", highest=True)
    checks.append(
        _check(
            name,
            "SLO met >= every baseline's - 1 pt",
            _pct(mine),
            f"{best[0]} {_pct(best[1])}" if best else "—",
            None if mine is None or best is None else mine >= best[1] - SLO_SLACK - 1e-9,
        )
    )
    mine = _figure(by_policy, "heliostat", "goodput_rps")
    best = _best(by_policy, "goodput_rps", highest=True)
    checks.append(
        _check(
            name,
            "goodput >= every baseline's",
            "—" if mine is None else f"{mine:g} rps",
            f"{best[0]} {best[1]:g} rps" if best else "—",
            None if mine is None or best is None else mine >= best[1] - 1e-9,
        )
    )
    mine = _figure(by_policy, "heliostat", "ttft_p99_ms")
    best = _best(by_policy, "ttft_p99_ms", highest=False)
    checks.append(
        _check(
            name,
            "TTFT p99 <= 1.1 x best baseline's",
            _ms(mine),
            f"{best[0]} {_ms(best[1])} (x1.1 = {P99_FACTOR * best[1]:.1f} ms)" if best else "—",
            None if mine is None or best is None else mine <= P99_FACTOR * best[1] + 1e-9,
        )
    )
    return checks


def _phases(setup: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    phases = setup.get("workload", {}).get("phases", [])
    return [p for p in phases if isinstance(p, Mapping)] if isinstance(phases, list) else []


def _loads(phase: Mapping[str, Any]) -> dict[str, float]:
    """Offered load per region with replicas in a phase (share of its capacity)."""
    load = phase.get("load", {})
    if not isinstance(load, Mapping):
        return {}
    return {str(r): v for r, x in load.items() if (v := _num(x)) is not None}


def planet_full(setup: Mapping[str, Any]) -> bool:
    """In some phase, every region with replicas is offered more than its capacity."""
    return any((loads := _loads(p)) and min(loads.values()) > 1.0 for p in _phases(setup))


def _planet_full(name: str, by_policy: Mapping[str, Any], setup: Mapping[str, Any]) -> list[Check]:
    if not planet_full(setup):
        return []
    slo = _num(setup.get("fleet", {}).get("slo_ttft_ms"))
    mine = _figure(by_policy, "heliostat", "admitted_ttft_p99_ms")
    return [
        _check(
            name,
            "admitted requests' TTFT p99 <= SLO (planet full)",
            _ms(mine),
            f"SLO {_ms(slo)}",
            None if mine is None or slo is None else mine <= slo,
        )
    ]


def _shared_prefix(
    name: str, by_policy: Mapping[str, Any], setup: Mapping[str, Any]
) -> list[Check]:
    if setup.get("workload", {}).get("workload") != "shared_prefix":
        return []
    checks = []
    for key, label, reference, higher in (
        ("prefix_hit_rate", "prefix hits >= ring_hash's", "ring_hash", True),
        ("slo_attainment", "SLO met >= picker's", "picker", True),
        ("ttft_p50_ms", "TTFT p50 <= picker's", "picker", False),
    ):
        mine = _figure(by_policy, "heliostat", key)
        theirs = _figure(by_policy, reference, key)
        show = _ms if key.endswith("_ms") else _pct
        ok = None
        if mine is not None and theirs is not None:
            ok = mine >= theirs - 1e-9 if higher else mine <= theirs + 1e-9
        checks.append(_check(name, label, show(mine), f"{reference} {show(theirs)}", ok))
    return checks


def _rtt(setup: Mapping[str, Any], a: str, b: str) -> float | None:
    if a == b:
        return 0.0
    regions = setup.get("fleet", {}).get("regions", {})
    for x, y in ((a, b), (b, a)):
        value = _num(regions.get(x, {}).get("rtt_ms", {}).get(y))
        if value is not None:
            return value
    return None


def surge(setup: Mapping[str, Any]) -> tuple[int, list[int], list[str]] | None:
    """The first surge: (the phase before it, its phases, the rescuing regions), or None.

    A surge phase offers some, not all, regions with replicas more than their capacity; the
    phase before it offered none of them more. Rescuers are the regions not overloaded in the
    surge that are within the network budget of an overloaded one."""
    phases = _phases(setup)
    budget = _num(setup.get("fleet", {}).get("network_budget_ms"))
    for index in range(1, len(phases)):
        loads, before = _loads(phases[index]), _loads(phases[index - 1])
        hot = sorted(r for r, v in loads.items() if v > 1.0)
        if not hot or len(hot) == len(loads) or any(v > 1.0 for v in before.values()):
            continue
        during = [index]
        while during[-1] + 1 < len(phases) and any(
            _loads(phases[during[-1] + 1]).get(r, 0.0) > 1.0 for r in hot
        ):
            during.append(during[-1] + 1)
        rescuers = [
            r
            for r in sorted(loads)
            if r not in hot
            and budget is not None
            and any((rtt := _rtt(setup, r, h)) is not None and rtt <= budget for h in hot)
        ]
        return index - 1, during, rescuers
    return None


def protection(
    setup: Mapping[str, Any], detail: Mapping[str, Any]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """policy -> rescuing region -> its users' SLO attainment before and during the surge."""
    found = surge(setup)
    if found is None:
        return {}
    before, during, rescuers = found
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for policy, figures in detail.items():
        phases = figures.get("by_phase") if isinstance(figures, Mapping) else None
        if not isinstance(phases, list):
            continue
        table[policy] = {
            region: {
                "before": _attainment(phases, [before], region),
                "during": _attainment(phases, during, region),
            }
            for region in rescuers
        }
    return table


def _attainment(phases: Sequence[Any], indices: Sequence[int], region: str) -> float | None:
    requests = met = 0.0
    for index in indices:
        if index >= len(phases) or not isinstance(phases[index], Mapping):
            return None
        row = phases[index].get(region)
        if not isinstance(row, Mapping):
            continue
        n, share = _num(row.get("requests")), _num(row.get("slo_attainment"))
        if n is None or share is None:
            return None
        requests += n
        met += n * share
    return round(met / requests, 4) if requests else None


def _protection_checks(
    name: str, setup: Mapping[str, Any], detail: Mapping[str, Any]
) -> list[Check]:
    if surge(setup) is None:
        return []
    mine = protection(setup, detail).get("heliostat", {})
    checks = []
    for region, row in mine.items():
        before, during = row["before"], row["during"]
        checks.append(
            _check(
                name,
                f"protection: {region}'s users during the surge >= before - 1 pt",
                _pct(during),
                f"before {_pct(before)}",
                None if before is None or during is None else during >= before - PROTECTION_SLACK,
            )
        )
    return checks


def constant_load(setup: Mapping[str, Any]) -> bool:
    """Every phase offers the same rates, none ramps."""
    phases = _phases(setup)
    if not phases:
        return False
    rates = [p.get("rates_rps") for p in phases]
    return all(r == rates[0] for r in rates) and not any(p.get("ramp") for p in phases)


def _stability(name: str, by_policy: Mapping[str, Any], setup: Mapping[str, Any]) -> list[Check]:
    if not constant_load(setup):
        return []
    mine = _figure(by_policy, "heliostat", "max_reversals_per_min")
    return [
        _check(
            name,
            "stability: reversals per minute <= 2 (weights and shares)",
            "—" if mine is None else f"{mine:g}/min",
            f"<= {MAX_REVERSALS_PER_MIN:g}/min",
            None if mine is None else mine <= MAX_REVERSALS_PER_MIN,
        )
    ]
