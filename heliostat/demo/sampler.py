"""Polls the running mesh twice a second into `observe.Sample`s.

One round asks each live replica for `/sim/stats`, each gateway's Envoy for `/clusters`,
and heliostat for `/debug/state` and `/metrics`: about a dozen loopback requests, cheap
enough for two shared cores, and frequent enough to see every control tick (1 s).
A source that does not answer is simply missing from the sample: a dead region must not
stop the measuring of the others.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from heliostat.demo.observe import Host, Reason, ReplicaReading, Sample, Signal
from heliostat.lab.mesh import MODEL, Mesh
from heliostat.lab.processes import http_get

INTERVAL = 0.5
TIMEOUT = 1.0


class Sampler:
    def __init__(self, mesh: Mesh, generations: Mapping[str, int]) -> None:
        self.mesh = mesh
        self.generations = generations  # region -> fleet restarts, kept by the runner
        self.samples: list[Sample] = []  # appended by the sampler thread only
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread = threading.Thread(target=self._main, name="demo-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def latest_after(self, t: float) -> Sample | None:
        return next((s for s in reversed(self.samples) if s.t >= t), None)

    def _main(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            # A lost round is a gap in the record, not a reason to stop measuring.
            with contextlib.suppress(Exception):
                self.samples.append(self.sample())
            self._stop.wait(max(0.05, INTERVAL - (time.monotonic() - began)))

    def sample(self) -> Sample:
        t = time.monotonic() - self._t0
        state = _json(self.mesh.heliostat.url("/debug/state"))
        return Sample(
            t=t,
            replicas=self._replicas(),
            signals=_signals(state),
            gateways=self._gateways(),
            sends=_sends(state),
            pushes=self._pushes(),
            reasons=_reasons(state, self.mesh.replicas),
        )

    def _replicas(self) -> dict[str, ReplicaReading]:
        readings: dict[str, ReplicaReading] = {}
        for region, addresses in self.mesh.replicas.items():
            generation = self.generations.get(region, 0)
            alive = self.mesh.fleets[region].running
            for address in addresses:
                stats = _json(f"http://{address}/sim/stats") if alive else None
                readings[address] = ReplicaReading(
                    region=region,
                    up=stats is not None,
                    generation=generation,
                    by_origin=dict(stats["by_origin_region"]) if stats else {},
                )
        return readings

    def _gateways(self) -> dict[str, dict[str, Host]]:
        gateways: dict[str, dict[str, Host]] = {}
        for region, envoy in self.mesh.envoys.items():
            try:
                hosts = envoy.hosts(MODEL)
            except OSError:
                continue
            gateways[region] = {
                address: Host(
                    region=attrs.get("region", ""),
                    weight=int(attrs.get("weight", "0")),
                    priority=int(attrs.get("priority", "0")),
                    health=attrs.get("health_flags", "?"),
                )
                for address, attrs in hosts.items()
            }
        return gateways

    def _pushes(self) -> float | None:
        try:
            return self.mesh.heliostat.metric("heliostat_control_pushes_total")
        except OSError:
            return None


def _json(url: str) -> Any:
    try:
        status, body = http_get(url, timeout=TIMEOUT)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def _signals(state: Any) -> dict[str, Signal]:
    if not state:
        return {}
    entries = state.get("signals", {}).get("models", {}).get(MODEL, [])
    return {
        e["address"]: Signal(
            waiting=e.get("waiting"),
            running=e.get("running"),
            kv=e.get("kv_usage"),
            stale=bool(e.get("stale")),
            error=e.get("error"),
        )
        for e in entries
    }


def _sends(state: Any) -> dict[str, dict[str, float]]:
    if not state:
        return {}
    regions = (state.get("control", {}).get("decisions", {}).get("models", {}).get(MODEL, {})).get(
        "regions", {}
    )
    return {r: dict(d.get("sends", {})) for r, d in regions.items() if d.get("sends")}


def _reasons(state: Any, replicas: Mapping[str, list[str]]) -> dict[str, Reason]:
    """Each endpoint's reason as its own region's view gives it."""
    if not state:
        return {}
    views = state.get("views", {}).get("regions", {})
    reasons: dict[str, Reason] = {}
    for region, addresses in replicas.items():
        endpoints = views.get(region, {}).get(MODEL, {}).get("endpoints", [])
        for e in endpoints:
            reason = e.get("reason") or {}
            if e.get("address") in addresses and "state" in reason:
                reasons[e["address"]] = Reason(
                    state=str(reason["state"]),
                    saturation=reason.get("saturation"),
                    driver=reason.get("driver"),
                )
    return reasons
