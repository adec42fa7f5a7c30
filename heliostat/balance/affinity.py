"""Hash or balance: whether a model with affinity uses consistent hashing now, from evidence.

Consistent hashing with bounded load pays when requests share prompt prefixes: a group's
requests meet its cached prefix on one replica. Without shared prefixes it costs: every key
is unique, so placement is random within the load bound, and a 4-slot replica takes a fifth
request while a peer idles, where least-request's choice-of-two would not. The operator
writes one policy for whatever traffic comes; heliostat decides, per model, from the
engines' own prefix-cache hit rates (`Sample.prefix_hit_rate`, tokens found / looked up):

- at start, hashing *on trial*: the operator asked for prefix affinity, which is itself
  evidence that prompts share prefixes, and waiting for least-request's caches to prove it
  costs every cached prefix until then (a group's requests scatter over the replicas and
  their caches fill with each other's prefixes). Under hashing, shared prefixes hit as soon
  as a group's second request arrives; prompts that share nothing never hit. So the trial
  ends, with no dwell after it, when the hit rate (the quick EWMA over ENTER_TAU_S) stays
  below EXIT_HIT_RATE for CONFIRM_S: least-request from then on, at the cost of a few
  seconds of hashing for traffic that shares nothing. The trial hashes with the tightest
  bound Envoy takes (TRIAL_BOUNDED_LOAD), so those seconds cost little more than
  least-request would; it is confirmed once the quick rate reaches ENTER_HIT_RATE, and the
  operator's `bounded_load` applies from then on.
- least-request -> hashing when the mean hit rate of the model's live endpoints (an EWMA
  over ENTER_TAU_S) stays at or above ENTER_HIT_RATE for CONFIRM_S: requests do share prefixes
  (under least-request a shared prefix still hits whenever its group lands on a replica that
  holds it; unrelated prompts share nothing). Not when it is already so high that hashing
  cannot add MIN_GAIN. The rate least-request achieved (that quick average) is remembered as
  the baseline.
- hashing -> least-request when, for CONFIRM_S, the hit rate (smoothed: an EWMA with
  EVIDENCE_TAU_S, restarted at each switch) falls below EXIT_HIT_RATE (the
  prefixes are no longer shared), or stays below baseline + MIN_GAIN (hashing does not pay:
  one prompt shared by everyone is cached everywhere anyway, and hashing it concentrates the
  load). After a trial that did not pay, the next one waits BACKOFF_S, doubling each time up
  to MAX_BACKOFF_S.
- at most one switch per MIN_DWELL_S (the first may come at once, and so may the one after a
  failed trial): a switch is a CDS change, and Envoy rebuilds a changed cluster, its
  in-flight counts starting again from zero.

While hashing (confirmed, or `mode: always`), the bound itself is chosen per region from
measurements unless the operator wrote `bounded_load` (then that constant holds): see
`region_bound` and `step_bounds`.

`affinity.mode: always` hashes whatever the evidence. An engine without a prefix-cache hit
rate (Triton, TGI) gives none: such a model hashes as configured, and says so.

The decision and its reason travel to Envoy in the clusters (`Balancing`, cluster metadata
`heliostat`) and to /debug/state (`describe`); the reason is kept verbatim while the choice
holds, so the cluster resource does not change between switches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from heliostat.balance.view import Balancing, LbPolicy, ReasonValue
from heliostat.balance.weights import alpha
from heliostat.policy import Engine, Model
from heliostat.policy.traffic import Affinity, AffinityMode, HashKind
from heliostat.samples import Sample

EVIDENCE_TAU_S = 3.0
ENTER_TAU_S = 1.0
ENTER_HIT_RATE = 0.15
EXIT_HIT_RATE = 0.05
# The trial's bound: the tightest Envoy takes (hash_balance_factor 100). Until hits say the
# keys matter, placement stays as even as hashing allows (a replica past the average
# in-flight count passes the request on along the ring): close to least-request for
# traffic that shares nothing, and still sticky enough for shared prefixes to hit.
TRIAL_BOUNDED_LOAD = 1.0
MIN_GAIN = 0.10
CONFIRM_S = 2.0
MIN_DWELL_S = 60.0
BACKOFF_S = 300.0
MAX_BACKOFF_S = 3600.0

# The bound while hashing pays (confirmed, or `mode: always`), per region, unless the
# operator wrote `bounded_load`: Envoy's bound decides, for a request whose key's replica is
# past it, between a spill (the next replica on the ring: a miss there, unless it holds the
# prefix too) and a wait (a replica past its slots queues it). A spill costs the prefill the
# cached prefix would have saved, times the chance it is cached where the key hashes: the
# cost of a miss (`miss_cost`: a full miss's prefill over a full hit's, fitted over the
# model's endpoints) x the region's hit rate. A wait costs the time until one of the
# replica's slots frees: 1 / the replica's completions per second at saturation (the
# law's capacity). Where the spill costs less (caches overcommitted: low hit rates; short
# prompts: cheap misses), the tightest bound; where it costs more (caches holding their
# keys' long prefixes), the operator's (looser) bound.
TIGHT_BOUND = 1.0
# Hysteresis on spill cost / wait cost: tighten below 1 / BOUND_BAND, loosen above
# BOUND_BAND (the two estimates are each good to some tens of percent).
BOUND_BAND = 1.3
BOUND_TAU_S = 5.0  # the ratio's smoothing
BOUND_SETTLE_S = 5.0  # watched this long (from the trial's start) before the first change
BOUND_CONFIRM_S = 3.0  # the ratio beyond the band this long before a change
BOUND_DWELL_S = 60.0  # between two changes of a region's bound (a CDS update, a ring rebuild)
# The spread of hit rates over the model's endpoints (standard deviation) below which the
# fit of prefill against misses is not trusted; then the upper estimate (no fixed prefill
# cost: every second of prefill is the uncached tokens') is used, which errs looser.
MIN_HIT_SPREAD = 0.05

# Engines whose adapters give a prefix-cache hit rate (`heliostat.signals.adapters`).
_REPORTS_HITS = frozenset({Engine.VLLM, Engine.SGLANG, Engine.TRTLLM})

_HASHES = {HashKind.RING_HASH: LbPolicy.RING_HASH, HashKind.MAGLEV: LbPolicy.MAGLEV}


@dataclass(frozen=True, slots=True)
class AffinityState:
    """One model's choice between least-request and hashing, and what it rests on.

    `why` is the reason the choice was made, `since` when (None: the initial choice);
    `evidence` the smoothed hit rate seen since then; `pending_since` when the evidence first
    asked for the other choice (None while it does not); `baseline` the hit rate
    least-request had when hashing was last tried; no new trial before `retry_at`, and the
    next wait is `backoff`. `mode` is the policy's, so a changed policy starts afresh.
    `trial` says the hashing is the initial one, not yet confirmed by hits; no switch before
    `dwell_from` + MIN_DWELL_S (None: the next switch may come at once).
    """

    mode: AffinityMode
    hashing: bool
    why: Mapping[str, ReasonValue]
    since: float | None = None
    evidence: float | None = None
    pending_since: float | None = None
    baseline: float | None = None
    retry_at: float = 0.0
    backoff: float = BACKOFF_S
    sample: float | None = None  # this tick's mean hit rate (for /debug/state)
    quick: float | None = None  # the hit rate smoothed over ENTER_TAU_S, since `since`
    trial: bool = False
    dwell_from: float | None = None
    # While hashing is confirmed (or always): each region's bound and why (`step_bounds`),
    # and the model's smoothed cost of a full miss (seconds of prefill, `miss_cost`).
    bounds: Mapping[str, RegionBound] = field(default_factory=dict)
    miss_s: float | None = None


@dataclass(frozen=True, slots=True)
class RegionBound:
    """One region's bounded load while the model hashes: tight (TIGHT_BOUND) or the
    operator's, why (`why`, kept verbatim while it holds), since when (`since`, None: not
    changed yet), from when the evidence is watched (`watched_from`), the smoothed ratio of
    a spill's cost to a wait's (`ratio`) and since when it asks for the other bound
    (`pending_since`)."""

    tight: bool
    why: Mapping[str, ReasonValue]
    watched_from: float
    since: float | None = None
    ratio: float | None = None
    pending_since: float | None = None
    spill_s: float | None = None  # this tick's estimates, for /debug/state
    wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class BoundEvidence:
    """A region's measurements for its bound: the share of prompt tokens its engines'
    prefix caches hold (None: unknown) and a replica's completions per second when full
    (None: unknown)."""

    hit_rate: float | None
    replica_rate: float | None


def region_bound(
    miss_s: float | None, hit_rate: float | None, replica_rate: float | None
) -> tuple[float, float, float] | None:
    """The expected cost of a spill and of a wait at a key's full replica (seconds) and
    their ratio, None when a measurement is missing. Pure: `step_bounds` adds the
    hysteresis and the dwell."""
    if miss_s is None or hit_rate is None or replica_rate is None or replica_rate <= 0.0:
        return None
    spill = max(0.0, miss_s) * min(1.0, max(0.0, hit_rate))
    wait = 1.0 / replica_rate
    return spill, wait, spill / wait


def miss_cost(points: Sequence[tuple[float, float]]) -> float | None:
    """The prefill a full miss costs over a full hit (seconds), from each endpoint's
    (prefix-cache hit rate, mean prefill): the slope of prefill against the share of
    prompt tokens missed (prefill = fixed + slope x missed), fitted by least squares while
    the missed shares spread by MIN_HIT_SPREAD (a standard deviation); else the largest
    mean prefill over its missed share (no fixed cost: an upper estimate, erring towards
    the operator's looser bound). None without a point."""
    usable = [(1.0 - h, p) for h, p in points if 0.0 <= h <= 1.0 and p >= 0.0]
    if not usable:
        return None
    n = len(usable)
    mx = sum(m for m, _ in usable) / n
    my = sum(p for _, p in usable) / n
    var = sum((m - mx) ** 2 for m, _ in usable) / n
    if var >= MIN_HIT_SPREAD**2:
        slope = sum((m - mx) * (p - my) for m, p in usable) / (n * var)
        if slope > 0.0:
            return slope
    return max(p / max(m, MIN_HIT_SPREAD) for m, p in usable)


def adaptive(affinity: Affinity) -> bool:
    """Whether the bound is heliostat's to choose: the operator did not write one."""
    return "bounded_load" not in affinity.model_fields_set


def step_bounds(
    model: Model,
    state: AffinityState | None,
    signals: Sequence[Sample | None],
    evidence: Mapping[str, BoundEvidence],
    now: float,
    dt: float,
) -> AffinityState | None:
    """Each region's bound for this tick (see TIGHT_BOUND) while the model hashes and the
    operator left the bound to heliostat (otherwise none are kept): watched from the
    trial's start, changed only once hashing is confirmed (or `mode: always`), the first
    time after BOUND_SETTLE_S, then at most once per BOUND_DWELL_S. `evidence` holds the
    regions' measurements (`BoundEvidence`), `signals` the model's endpoints' samples (for
    `miss_cost`)."""
    affinity = model.affinity
    if state is None or affinity is None:
        return state
    if not state.hashing or not adaptive(affinity):
        if state.bounds or state.miss_s is not None:
            return dataclasses.replace(state, bounds={}, miss_s=None)
        return state
    points = [
        (s.prefix_hit_rate, s.prefill_s)
        for s in signals
        if s is not None
        and s.prefix_hit_rate is not None
        and s.prefill_s is not None
        and s.scraped_at is not None
        and now - s.scraped_at <= model.signals.stale_after
        and s.consecutive_failures < model.thresholds.failures
    ]
    fitted = miss_cost(points)
    gain = alpha(dt, BOUND_TAU_S)
    miss_s = state.miss_s if fitted is None else _ewma(state.miss_s, fitted, gain)
    # A region without live endpoints this tick keeps its bound (and its dwell) as it is.
    bounds = {r: b for r, b in state.bounds.items() if r not in evidence}
    for region in sorted(evidence):
        bounds[region] = _bound_tick(
            state.bounds.get(region),
            miss_s,
            evidence[region],
            affinity.bounded_load,
            now,
            gain,
            state.trial,
        )
    return dataclasses.replace(state, bounds=bounds, miss_s=miss_s)


def _tight(bound: RegionBound | None) -> bool:
    return bound is not None and bound.tight


def _bound_tick(
    previous: RegionBound | None,
    miss_s: float | None,
    evidence: BoundEvidence,
    loose: float,
    now: float,
    gain: float,
    trial: bool,
) -> RegionBound:
    if previous is None:
        # The operator's bound (the trial's ends with the trial) until the costs are judged.
        first = "the operator's bound until the prefix caches' worth is measured"
        previous = RegionBound(False, {"bound_why": first}, watched_from=now)
    costs = region_bound(miss_s, evidence.hit_rate, evidence.replica_rate)
    if costs is None:
        return dataclasses.replace(previous, pending_since=None, spill_s=None, wait_s=None)
    spill, wait, ratio = costs
    smoothed = _ewma(previous.ratio, ratio, gain)
    if previous.tight:
        wants = smoothed > BOUND_BAND
    else:
        wants = smoothed < 1.0 / BOUND_BAND and loose > TIGHT_BOUND
    pending = (previous.pending_since or now) if wants else None
    settled = (
        now - previous.watched_from >= BOUND_SETTLE_S
        if previous.since is None
        else now - previous.since >= BOUND_DWELL_S
    )
    if pending is not None and settled and not trial and now - pending >= BOUND_CONFIRM_S:
        tight = not previous.tight
        if tight:
            text = "a spill (a miss where the key is cached) costs less than a wait for a slot"
        else:
            text = "a wait for a slot costs less than a spill (a miss where the key is cached)"
        why: dict[str, ReasonValue] = {
            "bound_why": text,
            "spill_ms": round(spill * 1000.0),
            "wait_ms": round(wait * 1000.0),
        }
        return RegionBound(tight, why, previous.watched_from, now, smoothed, None, spill, wait)
    return dataclasses.replace(
        previous, ratio=smoothed, pending_since=pending, spill_s=spill, wait_s=wait
    )


def balancing(
    affinity: Affinity,
    state: AffinityState,
    region: str | None = None,
    lends_to: Iterable[str] = (),
) -> Balancing:
    """What the model's clusters in `region`'s view (None: the neutral one) are told: the
    policy, its bound, and the reason (built from the state's `why` and `since`, and the
    region's bound's `why`, only, so it is the same while the choice holds).

    The view's gateways place by its bound every request they send, to their own replicas
    and to those of the regions it lends to (`lends_to`: its shares there): it is tight only
    while every one of those regions' bounds is."""
    reason: dict[str, ReasonValue] = {"mode": state.mode.value}
    chosen = state.bounds.get(region) if region is not None else None
    if state.hashing:
        policy = _HASHES[affinity.hash]
        loose_at = sorted(q for q in lends_to if q != region and not _tight(state.bounds.get(q)))
        if state.trial:
            bound = TRIAL_BOUNDED_LOAD
        elif _tight(chosen) and not loose_at:
            bound = TIGHT_BOUND
        else:
            bound = affinity.bounded_load
        factor: int | None = round(bound * 100)
        reason.update(lb=policy.value, bounded_load=bound)
        if chosen is not None and not state.trial:
            reason.update(chosen.why)
            if chosen.since is not None:
                reason["bound_decided_at"] = round(chosen.since, 3)
            if _tight(chosen) and loose_at:
                reason["bound_why"] = (
                    "its users are also served where a wait costs less than a spill: "
                    + ", ".join(loose_at)
                )
    else:
        policy, factor = LbPolicy.LEAST_REQUEST, None
        reason.update(lb=policy.value)
    reason.update(state.why)
    if state.since is not None:
        reason["decided_at"] = round(state.since, 3)
    return Balancing(policy, factor, reason)


def step(
    model: Model,
    signals: Iterable[Sample | None],
    previous: AffinityState | None,
    now: float,
    dt: float,
) -> AffinityState | None:
    """This tick's choice for `model` (None for a model without affinity)."""
    affinity = model.affinity
    if affinity is None:
        return None
    if affinity.mode is AffinityMode.ALWAYS:
        if previous is not None and previous.mode is AffinityMode.ALWAYS:
            return previous
        return AffinityState(AffinityMode.ALWAYS, True, {"why": "affinity.mode is always"})
    if previous is None or previous.mode is not affinity.mode:
        previous = _initial(model)
    sample = _hit_rate(model, signals, now)
    evidence, quick = previous.evidence, previous.quick
    if sample is not None:
        evidence = _ewma(evidence, sample, alpha(dt, EVIDENCE_TAU_S))
        quick = _ewma(quick, sample, alpha(dt, ENTER_TAU_S))
    # Hashing starts on a quick average (shared prefixes show at once and lastingly, and
    # every second on least-request loses hits; a few requests per replica and scrape make
    # single ticks too noisy), and ends on the slower one.
    # On trial, the quick one decides both ways: hits under hashing show within a second or
    # two of a group's second request.
    if previous.trial and quick is not None and quick >= ENTER_HIT_RATE:
        return _confirm(previous, evidence, quick, sample, now)
    trial = previous.trial
    judged = quick if trial or not previous.hashing else evidence
    wants, why = _wants_switch(dataclasses.replace(previous, trial=trial), judged, now)
    pending = None
    if wants:
        pending = previous.pending_since if previous.pending_since is not None else now
    dwell_from = previous.dwell_from
    settled = dwell_from is None or now - dwell_from >= MIN_DWELL_S
    if pending is not None and settled and now - pending >= CONFIRM_S:
        return _switch(dataclasses.replace(previous, trial=trial, quick=quick), why, now)
    return dataclasses.replace(
        previous,
        evidence=evidence,
        quick=quick,
        pending_since=pending,
        sample=sample,
        trial=trial,
    )


def _ewma(value: float | None, sample: float, gain: float) -> float:
    return sample if value is None else value + gain * (sample - value)


def _wants_switch(
    state: AffinityState, evidence: float | None, now: float
) -> tuple[bool, dict[str, ReasonValue]]:
    """Whether the evidence asks for the other choice, and the reason it would be made for."""
    if evidence is None:
        return False, {}
    rate = round(evidence, 3)
    if not state.hashing:
        if now < state.retry_at or not ENTER_HIT_RATE <= evidence <= 1.0 - MIN_GAIN:
            return False, {}
        return True, {
            "why": "prompts share prefixes: the engines' prefix caches hit under least-request",
            "hit_rate": rate,
        }
    if evidence < EXIT_HIT_RATE:
        if state.trial:
            return True, {
                "why": "prompts share no prefixes: the engines' prefix caches do not hit "
                "under hashing",
                "hit_rate": rate,
            }
        return True, {"why": "prompts no longer share prefixes", "hit_rate": rate}
    if state.baseline is not None and evidence < state.baseline + MIN_GAIN:
        return True, {
            "why": "hashing did not raise the prefix-cache hit rate over least-request's",
            "hit_rate": rate,
            "least_request_hit_rate": round(state.baseline, 3),
        }
    return False, {}


def _confirm(
    state: AffinityState, evidence: float | None, quick: float, sample: float | None, now: float
) -> AffinityState:
    """The trial's end by hits: hashing goes on, with the operator's bound from now on (a
    CDS change, but not a switch: no dwell follows, and no least-request baseline exists)."""
    why: dict[str, ReasonValue] = {
        "why": "prompts share prefixes: the engines' prefix caches hit under hashing",
        "hit_rate": round(quick, 3),
    }
    return dataclasses.replace(
        state,
        why=why,
        since=now,
        evidence=evidence,
        quick=quick,
        pending_since=None,
        sample=sample,
        trial=False,
    )


def _switch(state: AffinityState, why: dict[str, ReasonValue], now: float) -> AffinityState:
    if not state.hashing:
        # The baseline is the quick average that made the switch: least-request's recent hit
        # rate. The slow one still remembers a quiet spell before the prefixes were shared,
        # and would make any hashing look as if it paid.
        return AffinityState(
            state.mode,
            True,
            why,
            since=now,
            baseline=state.quick,
            retry_at=state.retry_at,
            backoff=state.backoff,
            dwell_from=now,
        )
    retry_at, backoff = 0.0, BACKOFF_S
    if "least_request_hit_rate" in why:  # a trial that did not pay: wait before the next
        retry_at, backoff = now + state.backoff, min(2 * state.backoff, MAX_BACKOFF_S)
        why = {**why, "retry_after_s": round(state.backoff)}
    # Leaving the initial trial waives the dwell: the evidence that prompts share prefixes
    # may come at once (traffic that starts unrelated and turns to shared prompts).
    dwell_from = None if state.trial else now
    return AffinityState(
        state.mode,
        False,
        why,
        since=now,
        retry_at=retry_at,
        backoff=backoff,
        dwell_from=dwell_from,
    )


def _initial(model: Model) -> AffinityState:
    assert model.affinity is not None
    mode = model.affinity.mode
    if model.engine not in _REPORTS_HITS:
        why = f"{model.engine.value} reports no prefix-cache hit rate: hashing as configured"
        return AffinityState(mode, True, {"why": why})
    why = "prefix affinity configured: hashing until the prefix caches show no sharing"
    return AffinityState(mode, True, {"why": why}, trial=True)


def _hit_rate(model: Model, signals: Iterable[Sample | None], now: float) -> float | None:
    """The mean prefix-cache hit rate of the model's endpoints with a fresh, good signal."""
    total, count = 0.0, 0
    for signal in signals:
        if (
            signal is None
            or signal.prefix_hit_rate is None
            or signal.scraped_at is None
            or now - signal.scraped_at > model.signals.stale_after
            or signal.consecutive_failures >= model.thresholds.failures
        ):
            continue
        total += signal.prefix_hit_rate
        count += 1
    return total / count if count else None
