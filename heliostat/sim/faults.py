"""Fault injection: the failures heliostat must route around, switchable over HTTP.

Each kind imitates something real GPUs do:

``hang``
    accept the request and never answer (a wedged CUDA context); the connection is dropped when
    the fault is healed or the replica stops, still without a response.
``error``
    answer ``status`` (default 500) in OpenAI's error format (an engine crash loop).
``slow``
    multiply every engine step by ``factor`` (default 4): thermal throttling, a noisy neighbour.
    Queues build for real, so TTFT and the scraped signals degrade together.
``no_metrics``
    ``/metrics`` answers 503 while inference keeps working (a broken exporter): the control
    plane must treat silence as unknown, not as idle.
``close``
    close the connection without any response (a crashed pod behind a live socket).
``metrics_hang``
    ``/metrics`` accepts the scrape and never answers until healed, while inference keeps
    working (an exporter stuck on a lock, a network path that drops the scraper's packets):
    scrapes time out, they do not fail fast.

``probability`` (0-1, default 1) makes ``hang``/``error``/``close`` intermittent, which is what
outlier detection must cope with. Faults of different kinds combine; posting a kind again
replaces it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


class FaultKind(enum.StrEnum):
    HANG = "hang"
    ERROR = "error"
    SLOW = "slow"
    NO_METRICS = "no_metrics"
    CLOSE = "close"
    METRICS_HANG = "metrics_hang"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    factor: float = 4.0
    status: int = 500
    probability: float = 1.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Validate a ``POST /sim/fault`` body; raises ValueError with a readable message."""
        unknown = set(data) - {"kind", "factor", "status", "probability"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        try:
            kind = FaultKind(str(data.get("kind")))
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"fault kind must be one of: {kinds}") from None
        factor = data.get("factor", 4.0)
        status = data.get("status", 500)
        probability = data.get("probability", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            raise ValueError("factor must be a number > 0")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an integer HTTP error status (400-599)")
        if (
            isinstance(probability, bool)
            or not isinstance(probability, int | float)
            or not 0 <= probability <= 1
        ):
            raise ValueError("probability must be a number in [0, 1]")
        return cls(kind, float(factor), status, float(probability))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out


class FaultSet:
    """The faults active on one replica."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: dict[FaultKind, Fault] = {}
        self._rng = random.Random(seed)

    def set(self, fault: Fault) -> None:
        self._faults[fault.kind] = fault

    def clear(self, kind: FaultKind | None = None) -> None:
        if kind is None:
            self._faults.clear()
        else:
            self._faults.pop(kind, None)

    def get(self, kind: FaultKind) -> Fault | None:
        return self._faults.get(kind)

    def active(self) -> list[Fault]:
        return list(self._faults.values())

    def fires(self, kind: FaultKind) -> Fault | None:
        """The fault of ``kind`` if it applies to this request (rolling its probability)."""
        fault = self._faults.get(kind)
        if fault is None:
            return None
        if fault.probability >= 1 or self._rng.random() < fault.probability:
            return fault
        return None

    @property
    def slowdown(self) -> float:
        fault = self._faults.get(FaultKind.SLOW)
        return fault.factor if fault else 1.0
