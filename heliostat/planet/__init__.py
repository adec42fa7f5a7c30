"""The planet: heliostat's own control law against a simulated planet, in virtual time.

`heliostat simulate SCENARIO.yaml` reads a scenario (regions and round trips, replicas per
region, diurnal demand, events, the SLO, the scaling loop), builds the policy heliostat would
serve for that fleet, and plays the scenario once per routing policy: heliostat (its pure
control law ticked as `serve` ticks it, its views applied by a model of Envoy's balancers),
GeoDNS alone, least-request with health failover, and the routing benchmark's endpoint picker.
Nothing opens a socket; time is virtual, every random draw is seeded.

Two engines run the same scenario:

- `fluid` (the default, for planet sizes): replicas that were treated alike share one state
  (a replica group), demand flows through Envoy's expected per-request choices in small
  time steps, and each replica's queue follows a fast model calibrated against
  `heliostat.sim.engine` (`fastmodel`); per-request latencies come from that model's
  distribution, not from samples;
- `discrete`: every request is routed by Envoy's per-request algorithms and served by its
  own `heliostat.sim.engine.Engine`, one per replica. Slow, exact; it is what the fluid
  engine is checked against (tests/planet).
"""
