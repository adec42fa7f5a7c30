"""Simulated vLLM-compatible GPU replicas, so heliostat can be exercised without GPUs.

Each replica runs an engine model (continuous batching, a KV block pool, a prefix cache) behind
vLLM's OpenAI-compatible HTTP API and its Prometheus metrics, adds the cross-region round trip
its caller would pay, and takes faults over HTTP. :class:`Fleet` hosts many in one event loop.
Timings and the accepted request fields are documented in :mod:`heliostat.sim.engine` and
:mod:`heliostat.sim.openai_api`.
"""

from heliostat.sim.config import ReplicaConfig, RttFn
from heliostat.sim.engine import Engine, EngineConfig, EngineRequest, simulate
from heliostat.sim.faults import Fault, FaultKind
from heliostat.sim.fleet import Fleet, run_fleet
from heliostat.sim.replica import Replica

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineRequest",
    "Fault",
    "FaultKind",
    "Fleet",
    "Replica",
    "ReplicaConfig",
    "RttFn",
    "run_fleet",
    "simulate",
]
