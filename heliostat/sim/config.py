"""Configuration of one simulated replica.

The capacity and timing knobs carry exactly the names of :class:`~heliostat.sim.engine.EngineConfig`
(``max_num_seqs``, ``num_gpu_blocks``, ``block_size``, ``speed``, ...) so a policy endpoint's
``sim:`` mapping can be splatted in with :meth:`ReplicaConfig.from_mapping`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from heliostat.sim.engine import EngineConfig

RttFn = Callable[[str, str], float]
"""``rtt_ms(origin_region, replica_region)``: round-trip milliseconds between two regions."""

_ENGINE_FIELDS = tuple(f.name for f in dataclasses.fields(EngineConfig))
_KNOB_TYPES: dict[str, type] = {
    f.name: (int if f.type in ("int", int) else float) for f in dataclasses.fields(EngineConfig)
}
# Replica-level knobs beside the engine's: data-parallel engine cores behind one server.
_KNOB_TYPES["data_parallel_size"] = int

METRIC_NAMES = ("v1", "v0")
"""The vLLM metric pages a replica can print (`heliostat.sim.metrics`)."""


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9101"`` -> ``("127.0.0.1", 9101)``; ``"[::1]:9101"`` works too."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port out of range in {address!r}")
    return host, number


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """One simulated vLLM server: where it listens, what it serves, how big and fast it is.

    `data_parallel_size` engine cores (vLLM's --data-parallel-size), each with the capacity
    knobs below, serve behind one address and one /metrics page (one `engine` label value
    each); requests go to the least loaded, as vLLM's data-parallel balancer sends them.
    `metric_names` "v0" prints the V0 engine's metric names instead of v1's.
    """

    address: str = "127.0.0.1:9101"
    region: str = "local"
    model: str = "sim-70b"
    version: str | None = None
    max_num_seqs: int = 16
    num_gpu_blocks: int = 2048
    block_size: int = 16
    speed: float = 1.0
    max_num_batched_tokens: int = 8192
    base_step_ms: float = 25.0
    per_seq_ms: float = 0.5
    per_ctx_ktoken_ms: float = 0.1
    prefill_ms_per_token: float = 0.25
    data_parallel_size: int = 1
    metric_names: str = "v1"

    def __post_init__(self) -> None:
        split_address(self.address)
        if not self.region or not self.model:
            raise ValueError("region and model must be non-empty")
        if self.data_parallel_size < 1:
            raise ValueError(f"data_parallel_size must be >= 1, got {self.data_parallel_size}")
        if self.metric_names not in METRIC_NAMES:
            raise ValueError(f"metric_names must be one of {METRIC_NAMES}")
        if self.metric_names == "v0" and self.data_parallel_size != 1:
            raise ValueError("vLLM V0 had no data parallelism: metric_names v0 needs one engine")
        self.engine_config()  # validates the knobs

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]

    def engine_config(self) -> EngineConfig:
        return EngineConfig(**{name: getattr(self, name) for name in _ENGINE_FIELDS})

    @classmethod
    def from_mapping(
        cls,
        *,
        address: str,
        region: str,
        model: str,
        version: str | None = None,
        sim: Mapping[str, Any] | None = None,
    ) -> ReplicaConfig:
        """Build from a policy endpoint and its ``sim:`` mapping, rejecting unknown knobs.

        A typo in a knob would otherwise silently fall back to a default and skew a benchmark.
        """
        knobs: dict[str, Any] = {}
        for key, value in (sim or {}).items():
            if key not in _KNOB_TYPES:
                raise ValueError(
                    f"unknown sim knob {key!r}; known: {', '.join(sorted(_KNOB_TYPES))}"
                )
            want = _KNOB_TYPES[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"sim knob {key} must be a number, got {value!r}")
            if want is int and not float(value).is_integer():
                raise ValueError(f"sim knob {key} must be an integer, got {value!r}")
            knobs[key] = want(value)
        return cls(address=address, region=region, model=model, version=version, **knobs)
