"""A three-region mesh for scenario tests: simulated fleet, heliostat, one Envoy per region.

Requests go to each region's gateway; what the replicas saw (`/sim/stats`) is the measure.
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
    write_policy,
)
from heliostat.sim import loadgen

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
    replicas: dict[str, list[str]]
    fleets: dict[str, SimFleet]  # one process per region: stopping one is a region outage
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
            loadgen.Shot(at, url, {"x-model": model, **(headers or {})}, body, label or region)
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

    def served_regions(self, report: loadgen.Report, label: str) -> Counter[str]:
        return report.by_region(label)

    def fleet_of(self, address: str) -> SimFleet:
        return self.fleets[self.region_of(address)]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            a: self.fleets[r].stats(a)
            for r, addresses in self.replicas.items()
            if self.fleets[r].running
            for a in addresses
        }

    def model_stats(self, model: str) -> dict[str, dict[str, Any]]:
        """`stats` of an extra model's replicas (those whose region's fleet runs)."""
        return {
            a: self.fleets[r].stats(a)
            for r, addresses in self.models[model].items()
            if self.fleets[r].running
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
) -> dict[str, Any]:
    """The mesh's policy: MODEL on `replicas`, then each extra model on its replicas."""
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
            "regions": {name: {"rtt_ms": dict(rtt)} for name, rtt in RTT.items()},
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
    endpoints = [
        {
            "address": address,
            "region": region,
            "slots": slots,
            "sim": {"max_num_seqs": slots, "speed": speed, **endpoint_sim.get(address, {})},
        }
        for region, addresses in replicas.items()
        for address in addresses
    ]
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
) -> Mesh:
    replicas = {
        region: [f"{LOCALHOST}:{free_port()}" for _ in range(count)]
        for region, count in per_region.items()
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
    document = mesh_document(
        policy_port,
        replicas,
        slots=slots,
        speed=speed,
        model_overrides=model_overrides,
        endpoint_sim=endpoint_sim(replicas) if endpoint_sim else None,
        extra_models=extras,
    )
    policy = workdir / "policy.yaml"
    write_policy(policy, document)
    fleets = {}
    regions = list(replicas)
    regions += sorted({r for _, addresses in extras for r in addresses} - set(replicas))
    for region in regions:
        # per-endpoint speeds come from the policy's sim knobs
        fleet = SimFleet(policy, workdir, speed=None, region=region)
        processes.append(fleet)
        fleet.start()
        fleets[region] = fleet
    heliostat = Heliostat(policy, workdir)
    processes.append(heliostat)
    heliostat.start()
    mesh = Mesh(policy, document, {}, replicas, fleets, heliostat)
    mesh.models = {extra.name: addresses for extra, addresses in extras}
    for region in RTT:
        port = free_port()
        envoy = Envoy(
            workdir,
            heliostat,
            node_id=f"gw-{region}",
            region=region,
            delta=delta,
            listener_port=port,
        )
        processes.append(envoy)
        envoy.start()
        mesh.gateways[region] = port
        mesh.envoys[region] = envoy
    return mesh
