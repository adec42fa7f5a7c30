"""What the control law remembers from one tick to the next.

The law is a pure function; everything that must persist (smoothed saturation, published weights
and the reasons they were published with, hysteresis flags, overflow shares, shedding levels,
the last queue depth seen) travels in these immutable records. The caller keeps the last
`ControlState` and hands it back on the next tick; nothing else is needed to resume, so two
heliostat replicas fed the same inputs publish the same views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from heliostat.balance.affinity import AffinityState
from heliostat.balance.saturation import Growth
from heliostat.balance.shares import Share
from heliostat.balance.view import EndpointView, ReasonValue
from heliostat.balance.weights import NO_MOVES, Moves

EndpointKey = tuple[str, str]
"""(model, address), the key of signals and of drained endpoints."""

# A capacity estimate needs some busy time (slot share x seconds) and some completions behind
# it; how sure it is beyond that is judged by its error (see endpoints.step).
MIN_BUSY_TIME = 5.0
MIN_COMPLETIONS = 10.0


def observed_capacity(completions: float, busy_time: float) -> float | None:
    """Requests/s a replica would complete with every slot busy (completions per busy
    second), once enough busy time and completions are behind it."""
    if busy_time < MIN_BUSY_TIME or completions < MIN_COMPLETIONS:
        return None
    return completions / busy_time


class EndpointState(NamedTuple):
    """One endpoint of one model after a tick (a NamedTuple: there are 10,000s per tick, and
    a frozen dataclass costs several times more to build).

    `level` is the EWMA of the endpoint's saturation (None while it has no fresh signal);
    `published` is what Envoy was given and only moves when the weight the level asks for
    leaves the dead band. `reason` is the reason published with that
    weight (without the per-view overflow note) and is kept verbatim while weight and state
    hold, so the resource's content hash does not change. `view` caches the EndpointView so
    an unchanged endpoint costs no allocation in the views.
    """

    state: str
    level: float | None
    published: int
    reason: Mapping[str, ReasonValue]
    view: EndpointView
    # Queue growth bookkeeping: the sample last seen, and the growth it showed.
    waiting: float | None = None
    scraped_at: float | None = None
    growth: Growth = Growth(0.0, 0.0)
    # Demand vs capacity (1.0 = at its thresholds) when the endpoint counts towards its
    # region's capacity (healthy or saturated with a fresh signal); None otherwise.
    pressure: float | None = None
    # Close to saturation (`weights.near`, with hysteresis), and the weight's last moves
    # (`weights.move`: its direction and recent reversals, for the reversal budget).
    near: bool = False
    moves: Moves = NO_MOVES
    # Observed capacity, as exponentially decaying sums (time constant CAPACITY_TAU_S) of the
    # requests it completed, of its busy slot-share x seconds, and of the seconds observed;
    # and its capacity tier in its region.
    completions: float = 0.0
    busy_time: float = 0.0
    window: float = 0.0
    tier: int = 0

    @property
    def service(self) -> float | None:
        """Its observed capacity (see `observed_capacity`)."""
        return observed_capacity(self.completions, self.busy_time)


@dataclass(frozen=True, slots=True)
class RegionState:
    """One region of one model: its load and what it lends out to its neighbours."""

    capacity: int  # endpoints with a fresh signal that can take traffic
    load: float  # sum of their pressures, in endpoint-capacity units
    demand: float  # load corrected for overflow in effect, smoothed: its own gateways' demand
    overflowing: bool  # hysteresis flag: started at pressure >= ENGAGE, ends at <= RELEASE
    lending: Mapping[str, Share] = field(default_factory=dict)  # rescuer -> share of demand
    measured: float = 0.0  # this tick's own demand before smoothing (what `demand` follows)

    @property
    def pressure(self) -> float | None:
        """Own demand over own capacity; above 1 its GPUs cannot carry its gateways' traffic."""
        return self.demand / self.capacity if self.capacity else None

    @property
    def shares(self) -> dict[str, float]:
        """The shares Envoy was given: rescuer -> share of this region's traffic."""
        return {q: s.published for q, s in self.lending.items() if s.published > 0}


@dataclass(frozen=True, slots=True)
class ShedState:
    """Batch shedding of one view (a region's, or the neutral one) of one model."""

    active: bool  # hysteresis flag: all in-budget regions saturated (or still above RELEASE)
    level: float  # smoothed drop percentage
    percent: int  # published whole percent, 0-100
    group: tuple[str, ...] = ()  # the regions whose pressure decided it


@dataclass(frozen=True, slots=True)
class FallbackState:
    """The fallback share of one scope of one model: a region's view, a tenant, the neutral view.

    `share` is the overflow-style share (goal = this tick's target, smoothed, published =
    what Envoy was told, confirmed over ticks); `reason` was built when `published` last
    changed and is kept verbatim while it holds (it travels to Envoy in route metadata, so
    it must not change the routes on every tick). The rest is this tick's decision, for
    /debug/state.
    """

    engaged: bool  # hysteresis flag: the scope's demand reached its thresholds
    demand: float  # smoothed demand of the scope's gateways before the fallback (endpoint units)
    share: Share
    pending: int = 0  # ticks a new level has been asked for (+ raise, - cut)
    ramp: int = 0  # direction of a move under way (+1, -1), exempt from re-confirmation
    reason: Mapping[str, ReasonValue] = field(default_factory=dict)
    state: str = "idle"
    target: float = 0.0
    pressure: float | None = None
    room: float | None = None  # the fallback model's room in the scope (endpoint units)


@dataclass(frozen=True, slots=True)
class FallbackStates:
    """Every scope's fallback share of one model, towards `model`."""

    model: str
    regions: Mapping[str, FallbackState]
    tenants: Mapping[str, FallbackState]
    neutral: FallbackState


@dataclass(frozen=True, slots=True)
class ModelState:
    regions: Mapping[str, RegionState]
    shed: Mapping[str, ShedState]  # by view region
    neutral_shed: ShedState
    fallback: FallbackStates | None = None  # models with `fallback` only
    affinity: AffinityState | None = None  # models with `affinity` only: hash or not


@dataclass(frozen=True, slots=True)
class ControlState:
    """Everything `compute` needs from the previous tick. Immutable; compare with ==."""

    now: float
    endpoints: Mapping[EndpointKey, EndpointState]
    models: Mapping[str, ModelState]
