"""The planet's gateway load window reads a quiet origin as Envoy's reports do: 0/s.

Envoy reports every cluster every interval, zeros included (`send_all_clusters`, see
`heliostat.xds.grpc.load_reports`); the planet's engines count only the requests there were.
"""

from __future__ import annotations

from heliostat.planet.law import (
    LRS_STALE_AFTER_S,
    ClusterLoad,
    GatewayLoads,
    LoadWindow,
    LocalityLoad,
)

MODEL = "llama"


def _loads(count: float, interval: float = 0.5) -> GatewayLoads:
    cluster = ClusterLoad({"eu-west": LocalityLoad(issued=count)})
    return GatewayLoads(interval_s=interval, clusters={("eu-west", MODEL): cluster})


def test_a_quiet_origin_reads_zero_demand_not_unknown() -> None:
    """An origin whose users sent nothing for a window's length read as unknown: the law
    took its demand from its engines for a tick, then from its gateways again, restarting
    its smoothing. Heard from within LRS_STALE_AFTER_S, it reads 0/s; beyond, it is stale."""
    window = LoadWindow()
    window.add(0.5, _loads(3.0))
    for k in range(2, 11):  # nothing for 4.5 s
        window.add(0.5 * k, GatewayLoads(interval_s=0.5, clusters={}))
    origin = window.load([MODEL], 5.0).origins.get((MODEL, "eu-west"))
    assert origin is not None and origin.total == 0.0
    later = 0.5 + LRS_STALE_AFTER_S + 0.5
    window.add(later, GatewayLoads(interval_s=0.5, clusters={}))
    assert (MODEL, "eu-west") not in window.load([MODEL], later).origins
