"""A multi-region mesh for scenario tests: simulated fleet, heliostat, one Envoy per region.

Requests go to each region's gateway; what the replicas saw (`/sim/stats`) is the measure.
By default the mesh has the three regions of RTT; a caller may give its own regions and
RTTs, any number of replicas per region, including none (an edge region: a gateway and its
users, no GPUs), and each replica's simulator knobs (speed, slots, KV pool) on its own.
Besides the main model (MODEL), a mesh can serve other models (`ExtraModel`: a fallback
model, say) from the same per-region fleet processes.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heliostat.lab.processes import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    SimFleet,
    free_port,
    start_stack,
    write_policy,
)
from heliostat.sim import loadgen
from heliostat.wire import MODEL_HEADER

MODEL = "llama-70b"
RTT = {
    "us-east": {"eu-west": 80, "ap-southeast": 210},
    "eu-west": {"ap-southeast": 160},
    "ap-southeast": {},
}


@dataclass(frozen=True)
class ExtraModel:
    """Another model the mesh serves beside MODEL: its replicas per region and, like the main
    model's `model_overrides`, keys of its policy section (`fallback`, `thresholds`...)."""

    name: str
    per_region: Mapping[str, int]
    slots: int = 4
    speed: float = 4.0
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Mesh:
    policy_path: Path
    document: dict[str, Any]
    gateways: dict[str, int]
    replicas: dict[str, list[str]]  # every region, an edge region with no addresses
    fleets: dict[str, SimFleet]  # one process per region with replicas: stopping one is an outage
    heliostat: Heliostat
    envoys: dict[str, Envoy] = field(default_factory=dict)
    # The extra models' replicas: model -> region -> addresses.
    models: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def region_of(self, address: str) -> str:
        for replicas in (self.replicas, *self.models.values()):
            for region, addresses in replicas.items():
                if address in addresses:
                    return region
        raise KeyError(f"{address} is no replica of this mesh")

    def shots(
        self,
        region: str,
        rate: float,
        duration: float,
        *,
        seed: int = 1,
        start: float = 0.0,
        label: str = "",
        headers: Mapping[str, str] | None = None,
        max_tokens: int = 24,
        prompt_tokens: int = 32,
        model: str = MODEL,
    ) -> list[loadgen.Shot]:
        rng = random.Random(f"{seed}-{region}-{label}")
        url = f"http://{LOCALHOST}:{self.gateways[region]}/v1/completions"
        body = loadgen.completion_body(model, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        return [
            loadgen.Shot(at, url, {MODEL_HEADER: model, **(headers or {})}, body, label or region)
            for at in loadgen.poisson_times(rate, duration, rng, start)
        ]

    def run(self, shots: list[loadgen.Shot], **kwargs: Any) -> loadgen.Report:
        return asyncio.run(loadgen.run(shots, **kwargs))

    def start_load(
        self, shots: list[loadgen.Shot], timeout: float = 60
    ) -> Callable[[], loadgen.Report]:
        """Send `shots` from a background thread; the returned call waits for the report."""
        outcome: dict[str, loadgen.Report] = {}
        runner = threading.Thread(
            target=lambda: outcome.setdefault("report", self.run(shots, timeout=timeout)),
            daemon=True,
        )
        runner.start()

        def finish() -> loadgen.Report:
            runner.join(timeout=timeout + 30)
            return outcome["report"]

        return finish

    def fleet_of(self, address: str) -> SimFleet:
        return self.fleets[self.region_of(address)]

    def stats(self) -> dict[str, dict[str, Any]]:
        return self._stats(self.replicas)

    def model_stats(self, model: str) -> dict[str, dict[str, Any]]:
        """`stats` of an extra model's replicas (those whose region's fleet runs)."""
        return self._stats(self.models[model])

    def _stats(self, replicas: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
        return {
            a: fleet.stats(a)
            for r, addresses in replicas.items()
            if (fleet := self.fleets.get(r)) is not None and fleet.running
            for a in addresses
        }

    def served_by_origin(self) -> dict[str, Counter[str]]:
        """origin region -> region that served it -> requests, as the replicas counted."""
        result: dict[str, Counter[str]] = {}
        for address, stats in self.stats().items():
            for origin, count in stats["by_origin_region"].items():
                result.setdefault(origin, Counter())[self.region_of(address)] += count
        return result

    def reset(self) -> None:
        for region, addresses in self.replicas.items():
            for address in addresses:
                self.fleets[region].reset(address)

    def signal(self, address: str) -> dict[str, Any]:
        entries = self.heliostat.state()["signals"]["models"][MODEL]
        return dict(next(e for e in entries if e["address"] == address))


def mesh_document(
    gateways_port: int,
    replicas: Mapping[str, list[str]],
    *,
    slots: int,
    speed: float,
    model_overrides: Mapping[str, Any] | None = None,
    endpoint_sim: Mapping[str, Mapping[str, Any]] | None = None,
    extra_models: Sequence[tuple[ExtraModel, Mapping[str, list[str]]]] = (),
    regions: Mapping[str, Mapping[str, float]] = RTT,
    east_west: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The mesh's policy: MODEL on `replicas`, then each extra model on its replicas.

    `regions` is region -> {peer: RTT ms} (either side of a pair), as in a policy; a region
    may have no replicas at all (an edge region). `east_west` gives regions an east-west
    gateway on that loopback port (lenders send the requests they lend there)."""
    models = [
        _model_section(MODEL, replicas, slots, speed, model_overrides or {}, endpoint_sim or {})
    ]
    for extra, addresses in extra_models:
        models.append(
            _model_section(extra.name, addresses, extra.slots, extra.speed, extra.overrides, {})
        )
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": "scenario"},
        "spec": {
            "regions": {
                name: {
                    "rtt_ms": dict(rtt),
                    **(
                        {"east_west": [f"{LOCALHOST}:{east_west[name]}"]}
                        if east_west and name in east_west
                        else {}
                    ),
                }
                for name, rtt in regions.items()
            },
            "gateway": {"port": gateways_port, "address": LOCALHOST},
            "models": models,
        },
    }


def _model_section(
    name: str,
    replicas: Mapping[str, list[str]],
    slots: int,
    speed: float,
    overrides: Mapping[str, Any],
    endpoint_sim: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    endpoints = []
    for region, addresses in replicas.items():
        for address in addresses:
            sim = {"max_num_seqs": slots, "speed": speed, **endpoint_sim.get(address, {})}
            endpoints.append(
                {"address": address, "region": region, "slots": sim["max_num_seqs"], "sim": sim}
            )
    return {
        "name": name,
        "engine": "vllm",
        "slo": {"ttft_ms": 800, "network_budget_ms": 170},
        "signals": {"interval": "500ms", "timeout": "250ms", "stale_after": "1500ms"},
        "thresholds": {"queue": 2, "kv": 0.8, "failures": 2},
        "overflow": {"max_share": 0.3},
        **overrides,
        "endpoints": endpoints,
    }


def start_mesh(
    workdir: Path,
    processes: list[Process],
    *,
    per_region: Mapping[str, int],
    slots: int = 4,
    speed: float = 4.0,
    delta: bool = False,
    model_overrides: Mapping[str, Any] | None = None,
    endpoint_sim: Callable[[dict[str, list[str]]], Mapping[str, Mapping[str, Any]]] | None = None,
    extra_models: Sequence[ExtraModel] = (),
    regions: Mapping[str, Mapping[str, float]] = RTT,
    gateway_regions: Sequence[str] | None = None,
    east_west: bool = False,
) -> Mesh:
    """Start the fleet (one process per region with replicas), heliostat, and one gateway
    per region of `regions` (edge regions included), or of `gateway_regions` where a
    scenario's users are in fewer of them, all on free loopback ports.

    `per_region` counts MODEL's replicas (0 or absent: an edge region); `endpoint_sim` gives
    each replica's simulator knobs beyond `slots` and `speed` (which it may override, one
    replica at a time), from the addresses chosen for every region. With `east_west`, each
    gateway of a region with replicas serves an east-west listener on a port of its own, and
    the policy names it as the region's east-west address: requests lent to the region go
    through its gateway (`heliostat.xds.translate.east_west`)."""
    unknown = sorted(set(per_region) - set(regions))
    if unknown:
        raise ValueError(f"replicas in regions {unknown} that the mesh does not have")
    gateway_regions = list(regions) if gateway_regions is None else list(gateway_regions)
    unknown = sorted(set(gateway_regions) - set(regions))
    if unknown:
        raise ValueError(f"gateways in regions {unknown} that the mesh does not have")
    replicas = {
        region: [f"{LOCALHOST}:{free_port()}" for _ in range(per_region.get(region, 0))]
        for region in regions
    }
    extras = [
        (
            extra,
            {
                region: [f"{LOCALHOST}:{free_port()}" for _ in range(count)]
                for region, count in extra.per_region.items()
            },
        )
        for extra in extra_models
    ]
    policy_port = free_port()
    east_west_ports = (
        {r: free_port() for r in gateway_regions if replicas.get(r)} if east_west else {}
    )
    document = mesh_document(
        policy_port,
        replicas,
        slots=slots,
        speed=speed,
        model_overrides=model_overrides,
        endpoint_sim=endpoint_sim(replicas) if endpoint_sim else None,
        extra_models=extras,
        regions=regions,
        east_west=east_west_ports,
    )
    policy = workdir / "policy.yaml"
    write_policy(policy, document)
    with_replicas = [r for r, addresses in replicas.items() if addresses]
    with_replicas += sorted(
        {r for _, addresses in extras for r, a in addresses.items() if a} - set(with_replicas)
    )
    stack = start_stack(
        policy,
        workdir,
        processes,
        fleet_regions=with_replicas,
        gateway_regions=gateway_regions,
        delta=delta,
        east_west_ports=east_west_ports,
    )
    fleets = {region: fleet for region, fleet in stack.fleets.items() if region is not None}
    mesh = Mesh(policy, document, stack.gateways, replicas, fleets, stack.heliostat, stack.envoys)
    mesh.models = {extra.name: addresses for extra, addresses in extras}
    return mesh
