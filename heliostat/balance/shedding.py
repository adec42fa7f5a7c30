"""Shedding batch traffic when no GPU within the network budget has room left.

Overflow moves work to a neighbour with headroom; shedding is for when there is none. For the
view of region r the group is r plus every region within the model's network budget of r
(for the neutral view: every region), counting only regions with live capacity. With the
regions' own-demand pressures Pi_q (see `overflow`):

- shedding starts when every region of the group has Pi_q > ENGAGE (1.0) and continues while
  every one stays above RELEASE (0.9) (hysteresis; the band in between holds the level);
- while it is on, the level rises by the excess still measured,
      residual = 100 * (1 - sum C_q / sum D_q)     (percentage points, over the group)
  at most SHED_UP_PER_S * dt and at least MIN_STEP per tick, and only if the residual is at
  least MIN_RESIDUAL (a dead zone: if measurements do not respond, as when there is no batch
  traffic to shed, the level still settles in a bounded number of ticks instead of creeping).
  Measurements are taken after the drop, so this is an integral controller: it settles on
  the level that brings the group back inside the band rather than dropping the full excess,
  shedding it, and then flapping back to zero;
- once released, the level falls by SHED_DOWN_PER_S * dt per tick;
- Envoy gets it in whole percent (0-100) on the batch cluster only. Interactive traffic is
  never dropped by heliostat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from heliostat.balance.state import RegionState, ShedState

ENGAGE = 1.0
RELEASE = 0.9
SHED_UP_PER_S = 10.0  # percentage points per second
SHED_DOWN_PER_S = 2.5
MIN_RESIDUAL = 1.0  # points of excess below which the level holds
MIN_STEP = 2.0  # points: the smallest raise, so a raise is never a crawl

IDLE = ShedState(active=False, level=0.0, percent=0)


def step(
    previous: ShedState | None,
    group: Sequence[str],
    regions: Mapping[str, RegionState],
    dt: float,
) -> ShedState:
    """The batch drop percentage of one view for this tick."""
    before = previous or IDLE
    members = tuple(q for q in group if q in regions and regions[q].capacity > 0)
    pressures = [regions[q].demand / regions[q].capacity for q in members]
    engage = bool(pressures) and all(p > ENGAGE for p in pressures)
    hold = before.active and bool(pressures) and all(p > RELEASE for p in pressures)
    if engage or hold:
        capacity = sum(regions[q].capacity for q in members)
        demand = sum(regions[q].demand for q in members)
        residual = 100.0 * (1.0 - capacity / demand) if demand > 0 else 0.0
        raise_by = 0.0
        if residual >= MIN_RESIDUAL:  # dead zone: a hair of excess must not creep forever
            raise_by = min(max(residual, MIN_STEP), SHED_UP_PER_S * dt)
        level = min(100.0, before.level + raise_by)
        active = True
    else:
        level = max(0.0, before.level - SHED_DOWN_PER_S * dt)
        active = False
    return ShedState(active=active, level=level, percent=int(level + 0.5), group=members)
