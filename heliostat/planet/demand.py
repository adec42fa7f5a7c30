"""What the planet's users ask for: requests per second per origin region, and their sizes.

Rates come from each region's diurnal shape (an hourly curve or a cosine around a peak hour)
times the flash crowds active at that moment. Sizes are the model's prompt and output token
spreads (clipped log-normals); the fluid engine needs only their moments, the discrete one
draws them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

from heliostat.planet.scenario import Demand, FlashCrowd, Scenario, TokenSpread

HOUR_S = 3600.0
DAY_S = 86_400.0
_GRID = 400  # quantiles used for a spread's moments


def diurnal_rate(demand: Demand, t: float, start_hour: float = 0.0) -> float:
    """Requests/s of one origin at `t` seconds after a start at `start_hour` UTC."""
    hour = ((t + start_hour * HOUR_S) % DAY_S) / HOUR_S
    if demand.curve is not None:
        low = int(hour) % 24
        frac = hour - int(hour)
        return demand.curve[low] * (1.0 - frac) + demand.curve[(low + 1) % 24] * frac
    peak = demand.peak_rps or 0.0
    swing = (1.0 + math.cos(2.0 * math.pi * (hour - demand.peak_hour) / 24.0)) / 2.0
    return peak * (demand.trough + (1.0 - demand.trough) * swing)


def crowd_factor(event: FlashCrowd, t: float) -> float:
    """The multiplier a flash crowd applies at `t`: 1 outside it, `factor` while it holds."""
    start, ramp, hold = event.at, max(event.ramp, 1e-9), event.hold
    if t < start or t > start + 2 * ramp + hold:
        return 1.0
    if t < start + ramp:
        progress = (t - start) / ramp
    elif t <= start + ramp + hold:
        progress = 1.0
    else:
        progress = 1.0 - (t - start - ramp - hold) / ramp
    return 1.0 + (event.factor - 1.0) * progress


class DemandModel:
    """Offered requests/s per origin region at any time of the scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.origins = sorted(scenario.demand)
        self._crowds = [e for e in scenario.events if isinstance(e, FlashCrowd)]

    def rate(self, origin: str, t: float) -> float:
        base = diurnal_rate(self.scenario.demand[origin], t, self.scenario.start_hour)
        for crowd in self._crowds:
            if not crowd.regions or origin in crowd.regions:
                base *= crowd_factor(crowd, t)
        return base

    def rates(self, t: float) -> dict[str, float]:
        return {origin: self.rate(origin, t) for origin in self.origins}

    def peak(self, origin: str, step: float = 60.0) -> float:
        """The origin's highest rate over the scenario (sampled every `step` seconds)."""
        samples = int(self.scenario.duration // step) + 1
        return max(self.rate(origin, i * step) for i in range(samples))


@dataclass(frozen=True, slots=True)
class Spread:
    """A clipped log-normal token count: its moments, and draws from it."""

    spec: TokenSpread
    mean: float
    second_moment: float

    @classmethod
    def of(cls, spec: TokenSpread) -> Spread:
        values = _quantiles(spec)
        mean = sum(values) / len(values)
        second = sum(v * v for v in values) / len(values)
        return cls(spec, mean, second)

    @property
    def cv2(self) -> float:
        """Squared coefficient of variation."""
        return max(0.0, self.second_moment / (self.mean * self.mean) - 1.0)

    def draw(self, rng: random.Random) -> int:
        spec = self.spec
        value = (
            spec.median * math.exp(spec.sigma * rng.gauss(0.0, 1.0)) if spec.sigma else spec.median
        )
        return int(min(spec.max, max(spec.min, round(value))))


def _quantiles(spec: TokenSpread) -> list[int]:
    normal = NormalDist()
    result = []
    for i in range(_GRID):
        z = normal.inv_cdf((i + 0.5) / _GRID)
        value = spec.median * math.exp(spec.sigma * z)
        result.append(int(min(spec.max, max(spec.min, round(value)))))
    return result


@dataclass(frozen=True, slots=True)
class Mix:
    """The request mix of the scenario's model: prompt and output spreads, KV blocks each."""

    prompt: Spread
    output: Spread
    blocks_per_request: float  # E[ceil((prompt + output) / block_size)]

    @classmethod
    def of(cls, scenario: Scenario) -> Mix:
        model = scenario.model
        block = model.engine.block_size
        prompts = _quantiles(model.prompt_tokens)
        outputs = _quantiles(model.output_tokens)
        # Prompt and output lengths are independent: pair the quantile grids in a rotation
        # so every prompt meets every part of the output spread once.
        blocks = [
            -(-(p + outputs[(i * 7919) % len(outputs)]) // block) for i, p in enumerate(prompts)
        ]
        return cls(
            Spread.of(model.prompt_tokens),
            Spread.of(model.output_tokens),
            sum(blocks) / len(blocks),
        )


def rates_table(model: DemandModel, step: float) -> Mapping[str, list[float]]:
    """Every origin's rate at every `step` of the scenario (for plots and peak sizing)."""
    samples = int(model.scenario.duration // step) + 1
    return {o: [model.rate(o, i * step) for i in range(samples)] for o in model.origins}
