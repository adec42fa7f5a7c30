"""The three workloads of the routing benchmark, built once from a seed, calibrated to the fleet.

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

- `chat`: single-turn prompts with a ShareGPT-like spread: prompt tokens log-normal around 160
  (16..1,024), output tokens log-normal around 24 (4..128); Poisson arrivals; every region's
  users at 65% of their region's capacity.
- `shared_prefix`: inference-perf's shared_prefix shape scaled down: 24 groups of 5 users, a
  768-token system prompt per group, a 96-token question per user, 32 output tokens; each
  request is a random (group, user); users everywhere use every group; 65% of the capacity a
  replica has when it sees every group (its cache then holds only a few of the 24 prompts).
- `regional_surge`: the chat mix, ap-southeast (one replica) offered twice its capacity,
  us-east and eu-west at 50% of theirs.

Capacity is computed, not guessed: the replica engine (`heliostat.sim.engine`) runs a sample of
the workload's own requests at saturation in virtual time, and requests/s completed is one
replica's capacity for that mix.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.routing_fleet import PER_REGION, engine_config
from heliostat.lab.mesh import MODEL
from heliostat.sim.engine import Engine, EngineRequest, simulate
from heliostat.sim.loadgen import Shot, poisson_times
from heliostat.sim.openai_api import parse_generation
from heliostat.sim.tokens import CHARS_PER_TOKEN

COMPLETIONS_PATH = "/v1/completions"
SEED = 6
CALIBRATION_SAMPLE = 1000

CHAT_LOAD = 0.65
SHARED_PREFIX_LOAD = 0.65
SURGE_REGION = "ap-southeast"
SURGE_LOAD = 2.0
SURGE_OTHERS_LOAD = 0.5

GROUPS = 24
USERS_PER_GROUP = 5
SYSTEM_TOKENS = 768
QUESTION_TOKENS = 96
SHARED_OUTPUT_TOKENS = 32

WORKLOADS = ("chat", "shared_prefix", "regional_surge")

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a workload: whose (origin region), when, and what."""

    origin: str
    at: float
    body: Body


@dataclass(frozen=True)
class Workload:
    name: str
    requests: tuple[Request, ...]
    rates: Mapping[str, float]
    """Offered requests/s per origin region."""
    capacity_rps: float
    """One replica's capacity for this mix (requests/s at saturation)."""
    description: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def shots(self, gateways: Mapping[str, int], host: str = "127.0.0.1") -> list[Shot]:
        """The requests as load-generator shots to one policy's gateways (origin -> port)."""
        return [
            Shot(
                r.at,
                f"http://{host}:{gateways[r.origin]}{COMPLETIONS_PATH}",
                {"x-model": MODEL},
                r.body,
                r.origin,
            )
            for r in self.requests
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "requests": len(self.requests),
            "rates_rps": {r: round(v, 2) for r, v in self.rates.items()},
            "replica_capacity_rps": round(self.capacity_rps, 2),
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


def _lognormal_int(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))))


def _body(text: str, max_tokens: int, system: str | None = None) -> Body:
    prompt = text if system is None else f"{system}\n\n{text}"
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True}


def chat_mix(rng: random.Random) -> Callable[[], Body]:
    """ShareGPT-like single-turn chats: long-tailed prompt and output lengths."""
    maker = TextMaker(rng)

    def one() -> Body:
        prompt = _lognormal_int(rng, 160, 0.9, 16, 1024)
        output = _lognormal_int(rng, 24, 0.8, 4, 128)
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


def replica_capacity(bodies: Sequence[Body]) -> float:
    """Requests/s one replica completes when these requests queue at it all at once."""
    engine = Engine(engine_config())
    arrivals = []
    for body in bodies:
        gen = parse_generation(body, chat=False)
        arrivals.append((0.0, EngineRequest(prompt=gen.prompt, max_tokens=gen.max_tokens)))
    end = simulate(engine, arrivals)
    return len(bodies) / end


@functools.cache
def calibrate(mix: Callable[[random.Random], Callable[[], Body]], seed: int) -> float:
    """One replica's capacity for a mix, from its own seeded sample (the same for every
    workload using the mix)."""
    draw = mix(random.Random(f"{seed}-calibration-{mix.__name__}"))
    return replica_capacity([draw() for _ in range(CALIBRATION_SAMPLE)])


def _build(
    name: str,
    mix: Callable[[], Body],
    capacity: float,
    load: Mapping[str, float],
    duration: float,
    rng: random.Random,
    description: str,
    extra: Mapping[str, Any] | None = None,
) -> Workload:
    rates = {r: load[r] * capacity * PER_REGION[r] for r in PER_REGION}
    requests = [
        Request(region, at, {})
        for region in PER_REGION
        for at in poisson_times(rates[region], duration, rng)
    ]
    requests.sort(key=lambda r: r.at)
    built = tuple(Request(r.origin, r.at, mix()) for r in requests)
    return Workload(name, built, rates, capacity, description, extra or {})


def build(name: str, duration: float, seed: int = SEED) -> Workload:
    """One workload of `duration` seconds, the same for every policy (and every run)."""
    rng = random.Random(f"{seed}-{name}")
    if name == "chat":
        mix = chat_mix(rng)
        capacity = calibrate(chat_mix, seed)
        return _build(
            name,
            mix,
            capacity,
            dict.fromkeys(PER_REGION, CHAT_LOAD),
            duration,
            rng,
            f"ShareGPT-like chats, Poisson, every region at {CHAT_LOAD:.0%} of its capacity",
        )
    if name == "shared_prefix":
        mix = shared_prefix_mix(rng)
        capacity = calibrate(shared_prefix_mix, seed)
        return _build(
            name,
            mix,
            capacity,
            dict.fromkeys(PER_REGION, SHARED_PREFIX_LOAD),
            duration,
            rng,
            f"{GROUPS} groups x {USERS_PER_GROUP} users, {SYSTEM_TOKENS}-token system prompt, "
            f"{QUESTION_TOKENS}-token question, {SHARED_OUTPUT_TOKENS} output tokens; every "
            f"region at {SHARED_PREFIX_LOAD:.0%} of the capacity of a replica that sees every "
            "group",
            {
                "groups": GROUPS,
                "users_per_group": USERS_PER_GROUP,
                "system_prompt_tokens": SYSTEM_TOKENS,
                "question_tokens": QUESTION_TOKENS,
                "output_tokens": SHARED_OUTPUT_TOKENS,
            },
        )
    if name == "regional_surge":
        mix = chat_mix(rng)
        capacity = calibrate(chat_mix, seed)
        load = {r: SURGE_LOAD if r == SURGE_REGION else SURGE_OTHERS_LOAD for r in PER_REGION}
        return _build(
            name,
            mix,
            capacity,
            load,
            duration,
            rng,
            f"the chat mix; {SURGE_REGION} offered {SURGE_LOAD:g}x its capacity, the other "
            f"regions {SURGE_OTHERS_LOAD:.0%} of theirs",
            {"surge_region": SURGE_REGION},
        )
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
