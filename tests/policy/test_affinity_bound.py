"""The default load bound of prefix affinity, against Envoy's bounded-load arithmetic.

Envoy's bound is relative to the gateway's requests in flight (`heliostat.planet.envoy`
models it), so a tight factor passes a key on at a light moment while its replica still has
a free slot: a miss, and a second copy of the prefix on the next replica of the ring. The
default must keep the key there, and still pass it on once its replica queues well past its
slots.
"""

from __future__ import annotations

from heliostat.balance import Health
from heliostat.planet.envoy import Balancer, HostEntry, LbConfig, LbKind, Locality
from heliostat.policy.traffic import Affinity

SLOTS = 4  # each replica's max_num_seqs
REPLICAS = tuple(HostEntry(f"r-{i}", "a", 1, Health.HEALTHY) for i in range(4))


def _keeps(factor: int, on_key_replica: int, elsewhere: dict[str, int]) -> bool:
    """Whether a request whose key maps to r-0 may stay there (r-0 is under its bound)."""
    balancer = Balancer([Locality("a", 0, 1000, REPLICAS)], LbConfig(LbKind.RING_HASH, factor))
    active = {"r-0": on_key_replica, **elsewhere}
    return "r-0" in balancer.split(active, cluster_active=sum(active.values()))


def test_the_default_bound_keeps_a_key_on_a_replica_with_a_free_slot_at_light_load() -> None:
    default = round(Affinity().bounded_load * 100)
    light = {"r-1": 1, "r-2": 1, "r-3": 0}  # five in flight over sixteen slots
    assert _keeps(default, SLOTS - 1, light)
    assert not _keeps(125, SLOTS - 1, light)  # the old default spilled it: a needless miss


def test_the_default_bound_still_passes_a_key_on_once_its_replica_queues() -> None:
    default = round(Affinity().bounded_load * 100)
    busy = {"r-1": 2, "r-2": 2, "r-3": 1}
    assert not _keeps(default, 2 * SLOTS, busy)  # four running, four waiting: move on
    assert _keeps(default, SLOTS, busy)
