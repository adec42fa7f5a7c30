"""A rescuer's onward share and the shares lent to it move as one unit (`overflow._as_units`):
what lands on the rescuer under the shares published stays within what the plan may put
there, whatever each share's holds say.

The bench's regional_surge (thirteenth full run): ap-southeast lent 76% of its users to
eu-west, and eu-west passed 71% of its own on to us-east to make room. Then eu-west's plan
completed a drain and its onward share fell at once to 34% (a drain's fall is urgent),
while ap-southeast's share into it, raised seconds before, was held against that reversal
for 2.5 s: eu-west's own users came home onto ap-southeast's, and 2.8% more of them missed
the SLO during the surge than before it.

One tick of `overflow.step` on the bench's chat fleet (us-east 4 replicas, eu-west 3,
ap-southeast 1, 4 slots each, 500 ms TTFT, 170 ms budget) with that last tick's state.
"""

from __future__ import annotations

import dataclasses

from heliostat.balance import overflow
from heliostat.balance.state import Held
from tests.balance.test_share_urgency import COUNTS, NOW, chat_fleet, last_tick
from tests.balance.test_spill import supply

LOADS = {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 2.0}


def test_a_rescuers_onward_share_does_not_fall_under_the_share_lent_to_it() -> None:
    policy, model, demands, gateways = chat_fleet(LOADS)
    regions = {r: supply(n, min(1.0, LOADS[r])) for r, n in COUNTS.items()}
    regions = {r: dataclasses.replace(s, free=2.0) for r, s in regions.items()}  # no distress
    lent = {
        "ap-southeast": {"eu-west": Held(0.76, 0.76, 1, NOW - 1.0)},
        "eu-west": {"us-east": Held(0.71, 0.71, 1, NOW - 1.0)},
        "us-east": {},
    }
    previous = {
        r: last_tick(s, demands[r], lent[r], 0.0, overflowing=bool(lent[r]), free=2.0)
        for r, s in regions.items()
    }
    # eu-west's plan drained a backlog at the last tick: its shares' falls are urgent.
    eu = previous["eu-west"]
    previous["eu-west"] = dataclasses.replace(eu, capacity=0.5 * eu.utilisation * eu.raw_capacity)
    state = overflow.step(policy, model, regions, True, gateways, previous, {}, 0.5, NOW)
    onward = state["eu-west"].lending["us-east"]
    into = state["ap-southeast"].lending["eu-west"]
    # The plan wants less onward than published (the fall a drain makes urgent), and the
    # share into eu-west is held up against its recent rise.
    assert onward.target < 0.71 - 0.05
    assert into.published == 0.76
    landed = demands["eu-west"] * (1.0 - onward.published) + demands["ap-southeast"] * 0.76
    planned = sum(s.plan.get("eu-west", 0.0) for s in state.values())
    room = state["eu-west"].plan.get("eu-west", 0.0) + demands["ap-southeast"] * into.target
    assert landed <= max(planned, room) + 0.01 * demands["eu-west"]
    assert onward.published < 0.71 + 1e-9  # no further than it was
