"""A scenario's requests, built once from its seed, calibrated to its replicas.

A workload is a list of requests, each with its users' region, its send time and its OpenAI
completions body (streamed). It does not know which gateway it will be sent to: the same
requests (same times, same prompts) are offered to every policy, only the gateway ports differ.

Prompts are real text (random words): the simulated replicas tokenize it (4 characters per
token, `heliostat.sim.tokens`) and derive prefix-cache hits from it, and Envoy's prefix key
(heliostat, ring_hash) and the picker's prefix index see the very same characters. So requests
sharing a system prompt share the first characters of their prompt text too. A group's system
prompt leads the `prompt` string, as a chat template would put the system message first.
Completions rather than chat: a streamed chat answer opens with an empty role chunk, which the
load generator would take for the first token.

The two kinds of request a scenario may ask for (`workload:`):

- `chat`: single-turn prompts with a ShareGPT-like spread: prompt tokens log-normal around 160
  (16..1,024), output tokens log-normal around 24 (4..128).
- `shared_prefix`: inference-perf's shared_prefix shape scaled down: 24 groups of 5 users, a
  768-token system prompt per group, a 96-token question per user, 32 output tokens; each
  request is a random (group, user); users everywhere use every group.

Arrivals are Poisson per origin region and phase, at `load` x the region's capacity or at
`rps`; a ramping phase moves the rate linearly from the previous phase's (thinning). Capacity
is computed, not guessed: the replica engine (`heliostat.sim.engine`) runs a sample of the mix
at saturation in virtual time, for each distinct replica configuration, and a region's
capacity is the sum over its replicas (for `shared_prefix`: the capacity of a replica that sees
every group, whose cache then holds only a few of the 24 prompts).

Sizes scale every phase's seconds by the same factor (`SCALE`), so a quick run keeps the
scenario's shape in less time.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import Size
from bench.scenario import Scenario
from heliostat.lab.mesh import MODEL
from heliostat.sim.engine import Engine, EngineConfig, EngineRequest, simulate
from heliostat.sim.loadgen import Shot, poisson_times
from heliostat.sim.openai_api import parse_generation
from heliostat.sim.tokens import CHARS_PER_TOKEN
from heliostat.wire import MODEL_HEADER

COMPLETIONS_PATH = "/v1/completions"
CALIBRATION_SAMPLE = 1000

# Seconds of a phase at each size, as a share of the seconds the file gives (full size).
SCALE: Mapping[Size, float] = {"tiny": 1 / 64, "quick": 1 / 8, "full": 1.0}

GROUPS = 24
USERS_PER_GROUP = 5
SYSTEM_TOKENS = 768
QUESTION_TOKENS = 96
SHARED_OUTPUT_TOKENS = 32

Body = dict[str, Any]
Mix = Callable[[random.Random], Callable[[], Body]]


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a workload: whose (origin region), when, and what."""

    origin: str
    at: float
    body: Body


@dataclass(frozen=True)
class PhaseWindow:
    """One phase at the run's size: when it starts and ends (seconds from the run's start),
    and the requests/s each origin offers at its end (at its start too, unless it ramps)."""

    start: float
    end: float
    rates: Mapping[str, float]
    ramp: bool
    load: Mapping[str, float]


@dataclass(frozen=True)
class Workload:
    name: str
    requests: tuple[Request, ...]
    phases: tuple[PhaseWindow, ...]
    capacity_rps: Mapping[str, float]
    """Each region's capacity for this mix (requests/s at saturation; 0 for an edge region)."""
    replica_capacity_rps: Mapping[str, float]
    """One replica's capacity per distinct configuration (its knobs, as text)."""
    description: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.phases[-1].end if self.phases else 0.0

    def shots(self, gateways: Mapping[str, int], host: str = "127.0.0.1") -> list[Shot]:
        """The requests as load-generator shots to one policy's gateways (origin -> port)."""
        return [
            Shot(
                r.at,
                f"http://{host}:{gateways[r.origin]}{COMPLETIONS_PATH}",
                {MODEL_HEADER: MODEL},
                r.body,
                r.origin,
            )
            for r in self.requests
        ]

    def phase_of(self, at: float) -> int:
        """The index of the phase a send time falls in."""
        for index, phase in enumerate(self.phases):
            if at < phase.end:
                return index
        return len(self.phases) - 1

    def describe(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "requests": len(self.requests),
            "seconds": round(self.seconds, 3),
            "region_capacity_rps": {r: round(v, 2) for r, v in self.capacity_rps.items()},
            "replica_capacity_rps": {k: round(v, 2) for k, v in self.replica_capacity_rps.items()},
            "phases": [
                {
                    "start_s": round(p.start, 3),
                    "end_s": round(p.end, 3),
                    "ramp": p.ramp,
                    "rates_rps": {r: round(v, 2) for r, v in p.rates.items()},
                    "load": {r: round(v, 3) for r, v in p.load.items()},
                }
                for p in self.phases
            ],
            **self.extra,
        }


class TextMaker:
    """Seeded random prose: words from a fixed made-up vocabulary, cut to an exact length."""

    def __init__(self, rng: random.Random, vocabulary: int = 512) -> None:
        self.rng = rng
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.words = [
            "".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
            for _ in range(vocabulary)
        ]

    def text(self, tokens: int) -> str:
        chars = tokens * CHARS_PER_TOKEN
        picked = self.rng.choices(self.words, k=chars // 4 + 2)
        return " ".join(picked)[:chars]


# The chat workload's lengths in tokens: lognormal (median, sigma) clipped to [min, max]. The
# planet's copies of the bench's fleets (bench/routing_planet.py) draw from the same spreads.
CHAT_TOKENS: dict[str, dict[str, float]] = {
    "prompt_tokens": {"median": 160, "sigma": 0.9, "min": 16, "max": 1024},
    "output_tokens": {"median": 24, "sigma": 0.8, "min": 4, "max": 128},
}


def _lognormal_int(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))))


def _draw(rng: random.Random, spread: dict[str, float]) -> int:
    """One length from a `CHAT_TOKENS` spread."""
    low, high = int(spread["min"]), int(spread["max"])
    return _lognormal_int(rng, spread["median"], spread["sigma"], low, high)


def _body(text: str, max_tokens: int, system: str | None = None) -> Body:
    prompt = text if system is None else f"{system}\n\n{text}"
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True}


def chat_mix(rng: random.Random) -> Callable[[], Body]:
    """ShareGPT-like single-turn chats: long-tailed prompt and output lengths."""
    maker = TextMaker(rng)

    def one() -> Body:
        prompt = _draw(rng, CHAT_TOKENS["prompt_tokens"])
        output = _draw(rng, CHAT_TOKENS["output_tokens"])
        return _body(maker.text(prompt), output)

    return one


def shared_prefix_mix(rng: random.Random) -> Callable[[], Body]:
    """Groups of users sharing a long system prompt; each user has a question of their own."""
    maker = TextMaker(rng)
    systems = [maker.text(SYSTEM_TOKENS) for _ in range(GROUPS)]
    questions = [[maker.text(QUESTION_TOKENS) for _ in range(USERS_PER_GROUP)] for _ in systems]

    def one() -> Body:
        group = rng.randrange(GROUPS)
        user = rng.randrange(USERS_PER_GROUP)
        return _body(questions[group][user], SHARED_OUTPUT_TOKENS, systems[group])

    return one


MIXES: Mapping[str, Mix] = {"chat": chat_mix, "shared_prefix": shared_prefix_mix}


def engine_config(knobs: Mapping[str, Any]) -> EngineConfig:
    """One replica's engine, as `heliostat sim fleet` builds it from the policy's sim knobs."""
    return EngineConfig(**knobs)


def replica_capacity(bodies: Sequence[Body], config: EngineConfig) -> float:
    """Requests/s one replica completes when these requests queue at it all at once."""
    engine = Engine(config)
    arrivals = []
    for body in bodies:
        gen = parse_generation(body, chat=False)
        arrivals.append((0.0, EngineRequest(prompt=gen.prompt, max_tokens=gen.max_tokens)))
    end = simulate(engine, arrivals)
    return len(bodies) / end


@functools.cache
def calibrate(kind: str, seed: int, knobs: tuple[tuple[str, Any], ...]) -> float:
    """One replica's capacity for a mix, from the mix's own seeded sample (the same sample
    for every scenario and replica configuration)."""
    draw = MIXES[kind](random.Random(f"{seed}-calibration-{MIXES[kind].__name__}"))
    return replica_capacity([draw() for _ in range(CALIBRATION_SAMPLE)], engine_config(dict(knobs)))


def knob_key(knobs: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(knobs.items())) or "defaults"


def build(scenario: Scenario, size: Size) -> Workload:
    """The scenario's requests at `size`, the same for every policy (and every run)."""
    scale = SCALE[size]
    rng = random.Random(f"{scenario.seed}-{scenario.name}")
    mix = MIXES[scenario.workload](rng)
    capacity: dict[str, float] = {}
    per_config: dict[str, float] = {}
    for region in scenario.regions:
        total = 0.0
        for knobs in scenario.knobs(region):
            one = calibrate(scenario.workload, scenario.seed, tuple(sorted(knobs.items())))
            per_config[knob_key(knobs)] = one
            total += one
        capacity[region] = total
    windows: list[PhaseWindow] = []
    start = 0.0
    for phase in scenario.phases:
        end = start + phase.seconds * scale
        rates = {
            r: phase.rps[r] if r in phase.rps else phase.load.get(r, 0.0) * capacity[r]
            for r in scenario.regions
        }
        load = {r: rates[r] / capacity[r] for r in scenario.regions if capacity[r] > 0}
        windows.append(PhaseWindow(start, end, rates, phase.ramp, load))
        start = end
    times: list[tuple[float, str]] = []
    for region in scenario.regions:
        before = 0.0
        for window in windows:
            times += [(at, region) for at in _arrivals(window, region, before, rng)]
            before = window.rates[region]
    times.sort()
    requests = tuple(
        Request(origin, at, {**mix(), "stream": scenario.stream}) for at, origin in times
    )
    extra: dict[str, Any] = {
        "workload": scenario.workload,
        "scale": scale,
        "stream": scenario.stream,
    }
    if scenario.workload == "shared_prefix":
        extra |= {
            "groups": GROUPS,
            "users_per_group": USERS_PER_GROUP,
            "system_prompt_tokens": SYSTEM_TOKENS,
            "question_tokens": QUESTION_TOKENS,
            "output_tokens": SHARED_OUTPUT_TOKENS,
        }
    description = scenario.description or f"{scenario.workload} requests"
    return Workload(
        scenario.name, requests, tuple(windows), capacity, per_config, description, extra
    )


def _arrivals(window: PhaseWindow, region: str, before: float, rng: random.Random) -> list[float]:
    """Poisson send times of one origin in one phase; a ramp thins a Poisson stream at the
    higher of its two rates down to the rate of the moment."""
    rate = window.rates[region]
    duration = window.end - window.start
    if not window.ramp or before == rate:
        return poisson_times(rate, duration, rng, window.start) if rate > 0 else []
    peak = max(before, rate)
    kept = []
    for at in poisson_times(peak, duration, rng, window.start):
        now = before + (rate - before) * (at - window.start) / duration
        if rng.random() * peak < now:
            kept.append(at)
    return kept
