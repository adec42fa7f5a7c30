"""A fast model of one `heliostat.sim.engine` replica, for the fluid engine.

The engine runs steps: every running sequence decodes one token per step, new requests are
prefilled in the step that admits them (their first token comes at its end), and a step
costs `base + per_seq * decoding + per_ctx * context/1000 + prefill * prompt tokens` ms,
divided by `speed`. With `r` requests running and the scenario's mix (mean prompt P, mean
output O), a request holds its slot for O steps and, in steady state, r/O requests start per
step, so one step takes

    T(r) = a + b * r,   a = base / speed,
                        b = ((1 - 1/O) * (per_seq + per_ctx * (P + O/2) / 1000)
                             + prefill * P / O) / speed                            (ms)

and the replica completes mu(r) = r / (O * T(r)) requests per second, at most
`capacity` = mu(c) with c the slots it can fill (max_num_seqs, or fewer when the KV pool,
which reserves prompt + output up front, runs out first).

Requests in the replica, n, follow dn/dt = arrivals - mu(min(n, c)): below c the replica
settles where mu(n) equals the arrivals (stepped semi-implicitly, stable for any time step);
above c the excess waits, first come first served, for capacity.

A request's time to first token is then

    its wait
    + the rest of the step under way, if the engine is busy: arrivals land in long steps
      more often than in short ones, so its mean is E[T^2] / (2 E[T]), where a step's
      prefill varies with the number of prompts it admits (Poisson) and their lengths;
      taken as uniform over twice that mean
    + the step that prefills it: decoding at T_d(r) (T(r) without prefill), its own whole
      prompt, and the prompts of the others that arrived during the same rest of a step
      (which stretches that rest by 1 + arrivals/s * mean prompt * prefill time per token)

where the wait is the fluid backlog / capacity, plus the random wait below saturation: the
requests in the replica follow a birth-death chain (arrivals in, completions out at mu(n)),
whose stationary distribution says how often every slot is taken (`occupancy`); an arrival
then waits an exponential time of rate capacity * (1 - rho) * 2 / (1 + cs2), cs2 the
service time's squared coefficient of variation (the Allen-Cunneen
correction for non-exponential service). That random part is stationary only after the
queue's relaxation time, minutes near saturation: a replica pushed to 98% for a few seconds
has not built its stationary queue yet, so the fluid engine follows how far it has built
up (`relaxation_s`) and scales the random waits and queue draws by it.
`tests/planet/test_fastmodel.py` checks throughput, occupancy, KV use and TTFT percentiles
against the engine itself.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from statistics import NormalDist

from heliostat.planet.demand import Mix
from heliostat.sim.engine import EngineConfig

_NORMAL = NormalDist()
RHO_CAP = 0.99  # the random part of the wait is taken at most at this utilisation
RELAXATION_CAP_S = 600.0
# A request's own prompt length, by strata of its spread: (quantile, probability).
PROMPT_STRATA = (
    (0.05, 0.1),
    (0.15, 0.1),
    (0.3, 0.2),
    (0.5, 0.2),
    (0.7, 0.2),
    (0.85, 0.1),
    (0.94, 0.08),
    (0.99, 0.02),
)


@dataclass(frozen=True, slots=True)
class Wait:
    """What an arriving request waits before admission: a fixed backlog part plus, with
    probability `p`, an exponential time of rate `rate` (per second)."""

    backlog_s: float
    p: float
    rate: float

    @property
    def mean(self) -> float:
        return self.backlog_s + (self.p / self.rate if self.p > 0 and self.rate > 0 else 0.0)

    def quantile_extra(self, q: float) -> float:
        """The random part's value at quantile q (0 for the mass that does not wait)."""
        if self.p <= 0.0 or q <= 1.0 - self.p or self.rate <= 0:
            return 0.0
        return -math.log(max(1e-12, (1.0 - q) / self.p)) / self.rate


@dataclass(frozen=True, slots=True)
class Ttft:
    """Time to first token of the requests arriving now at one replica (seconds, without
    the network): `fixed_s` + the rest of the step under way (with probability `busy`:
    U * width, U uniform in [0, 1], the width by strata `residual_s` of (seconds,
    probability)) + the wait + the own prompt's prefill (strata `prompts_s`)."""

    fixed_s: float
    residual_s: tuple[tuple[float, float], ...]
    busy: float
    wait: Wait
    prompts_s: tuple[tuple[float, float], ...]

    @property
    def upper_s(self) -> float:
        """Where the distribution (without its exponential wait) ends."""
        return (
            self.fixed_s
            + self.wait.backlog_s
            + max(p for p, _ in self.prompts_s)
            + max(w for w, _ in self.residual_s)
        )

    def cdf(self, x: float) -> float:
        """P(TTFT <= x)."""
        wait = self.wait
        upper = self.upper_s
        if x >= upper:
            if wait.p <= 0:
                return 1.0
            if wait.rate > 0 and wait.rate * (x - upper) > 21.0:  # tail below 1e-9
                return 1.0
        base = x - self.fixed_s - wait.backlog_s
        if base <= 0:
            return 0.0
        total = 0.0
        for prompt, weight in self.prompts_s:
            y = base - prompt
            if y <= 0:
                continue
            idle = (1.0 - self.busy) * _exp_cdf(y, wait.p, wait.rate)
            busy = sum(
                share * _uniform_exp_cdf(y, width, wait.p, wait.rate)
                for width, share in self.residual_s
            )
            total += weight * (idle + self.busy * busy)
        return total

    def points(self) -> list[tuple[float, float]]:
        """The distribution as (seconds, probability) points, for percentiles.

        One point per prompt stratum; its residual step and random wait are taken at
        stratified quantiles paired so that each marginal keeps its strata (strata of equal
        probability are paired in reverse, the tail strata with each other)."""
        base = self.fixed_s + self.wait.backlog_s
        widths = _residual_quantiles(self.residual_s)
        result = []
        for (prompt, weight), (u, q), width in zip(self.prompts_s, _PAIRED, widths, strict=True):
            residual = width * u * self.busy
            result.append((base + prompt + residual + self.wait.quantile_extra(q), weight))
        return result


# (residual fraction, wait quantile) for each prompt stratum, in PROMPT_STRATA's order.
_PAIRED = (
    (0.8, 0.85),
    (0.5, 0.15),
    (0.3, 0.7),
    (0.5, 0.5),
    (0.7, 0.3),
    (0.2, 0.05),
    (0.6, 0.94),
    (0.9, 0.99),
)
# Where each point's step width is read in the width strata's distribution.
_WIDTH_QUANTILES = (0.5, 0.3, 0.1, 0.7, 0.4, 0.6, 0.9, 0.98)


def _residual_quantiles(strata: tuple[tuple[float, float], ...]) -> list[float]:
    ordered = sorted(strata)
    result = []
    for q in _WIDTH_QUANTILES:
        acc = 0.0
        chosen = ordered[-1][0]
        for width, share in ordered:
            acc += share
            if acc >= q:
                chosen = width
                break
        result.append(chosen)
    return result


def _exp_cdf(y: float, p: float, rate: float) -> float:
    """P(B*E <= y), B ~ Bernoulli(p), E ~ Exp(rate)."""
    if y < 0:
        return 0.0
    if p <= 0 or rate <= 0:
        return 1.0 if p <= 0 else 1.0 - p
    return 1.0 - p * math.exp(-rate * y)


def _uniform_exp_cdf(y: float, width: float, p: float, rate: float) -> float:
    """P(width*U + B*E <= y)."""
    if y < 0:
        return 0.0
    if width <= 0:
        return _exp_cdf(y, p, rate)
    low = min(width, y)
    no_wait = low / width
    if p <= 0 or rate <= 0:
        return no_wait if p <= 0 else (1.0 - p) * no_wait
    # E over u in [0, low] of P(E <= y - u), divided by width
    waited = (low - (math.exp(-rate * (y - low)) - math.exp(-rate * y)) / rate) / width
    return (1.0 - p) * no_wait + p * waited


@dataclass(frozen=True, slots=True)
class FastReplica:
    """The fast model of one replica for one request mix (see the module docstring)."""

    config: EngineConfig
    mix: Mix
    slots: float
    a_s: float  # step time: a + b * running (seconds)
    b_s: float
    decode_b_s: float  # the part of b that is decoding (the rest is prefill)
    prefill_s_per_token: float
    capacity: float
    cs2: float
    prompt_second_moment: float

    @classmethod
    def of(cls, config: EngineConfig, mix: Mix) -> FastReplica:
        prompt, output = mix.prompt.mean, max(1.0, mix.output.mean)
        keep = 1.0 - 1.0 / output
        context = prompt + output / 2
        decode_ms = keep * (config.per_seq_ms + config.per_ctx_ktoken_ms * context / 1000)
        prefill_ms = config.prefill_ms_per_token * prompt / output
        scale = config.speed * 1000.0
        a = config.base_step_ms / scale
        b = (decode_ms + prefill_ms) / scale
        kv_slots = config.num_gpu_blocks / max(1.0, mix.blocks_per_request)
        slots = max(1.0, float(min(config.max_num_seqs, math.floor(kv_slots))))
        capacity = slots / (output * (a + b * slots))
        return cls(
            config=config,
            mix=mix,
            slots=slots,
            a_s=a,
            b_s=b,
            decode_b_s=decode_ms / scale,
            prefill_s_per_token=config.prefill_ms_per_token / scale,
            capacity=capacity,
            cs2=mix.output.cv2,
            prompt_second_moment=mix.prompt.second_moment,
        )

    def with_speed(self, factor: float) -> FastReplica:
        """The same replica running `factor` times as fast (a canary build)."""
        return FastReplica.of(replace(self.config, speed=self.config.speed * factor), self.mix)

    # -- steady state ------------------------------------------------------------------------

    def step_s(self, running: float) -> float:
        return self.a_s + self.b_s * max(0.0, running)

    def completion_rate(self, in_system: float) -> float:
        """Completions per second with `in_system` requests (running ones are min(n, c))."""
        running = min(in_system, self.slots)
        if running <= 0:
            return 0.0
        return running / (self.mix.output.mean * self.step_s(running))

    def running_for(self, rate: float) -> float:
        """Requests running in steady state at `rate` arrivals/s (c when at capacity)."""
        if rate >= self.capacity:
            return self.slots
        o = self.mix.output.mean
        return min(self.slots, rate * o * self.a_s / max(1e-12, 1.0 - rate * o * self.b_s))

    def kv_usage(self, running: float) -> float:
        blocks = running * self.mix.blocks_per_request
        return min(1.0, blocks / self.config.num_gpu_blocks)

    # -- dynamics ----------------------------------------------------------------------------

    def advance(self, in_system: float, rate: float, dt: float) -> tuple[float, float]:
        """Requests in the replica after `dt` seconds of `rate` arrivals/s, and completions."""
        n = in_system
        done = 0.0
        if n > self.slots:
            after = n + (rate - self.capacity) * dt
            if after >= self.slots:
                return after, self.capacity * dt
            # the backlog drains within the step; the rest of it relaxes below c
            drain = (n - self.slots) / max(1e-12, self.capacity - rate)
            done = self.capacity * drain
            n, dt = self.slots, dt - drain
        if rate > self.capacity:  # it fills up: how long until all slots run?
            fill = (self.slots - n) / max(1e-12, rate - self.completion_rate(n))
            if fill < dt:
                done += (self.completion_rate(n) + self.capacity) / 2 * fill
                done += self.capacity * (dt - fill)
                return self.slots + (rate - self.capacity) * (dt - fill), done
        per_request = 1.0 / (self.mix.output.mean * self.step_s(max(n, 1e-9)))
        after = min(self.slots, (n + rate * dt) / (1.0 + per_request * dt))
        done += max(0.0, n + rate * dt - after)
        return after, done

    # -- latency -----------------------------------------------------------------------------

    def occupancy(self, rate: float) -> Occupancy:
        """The stationary distribution of requests in the replica at `rate` arrivals/s."""
        cached = _OCCUPANCY.get(id(self))
        if cached is None or cached[0] is not self:
            cached = _OCCUPANCY[id(self)] = (self, _occupancy_table(self))
        table = cached[1]
        rho = min(RHO_CAP, max(0.0, rate / self.capacity)) if self.capacity > 0 else 0.0
        return table[min(len(table) - 1, round(rho * (len(table) - 1) / RHO_CAP))]

    def relaxation_s(self, rate: float) -> float:
        """How long the random part of the queue takes to build up (or drain) towards its
        stationary level at this rate: a queue's heavy-traffic relaxation time,
        1 / (capacity * (1 - sqrt(rho))^2), at most RELAXATION_CAP_S."""
        rho = min(RHO_CAP, max(0.0, rate / self.capacity)) if self.capacity > 0 else 0.0
        gap = (1.0 - math.sqrt(rho)) ** 2
        return min(RELAXATION_CAP_S, 1.0 / (self.capacity * gap)) if gap > 0 else RELAXATION_CAP_S

    def wait(self, in_system: float, rate: float, built: float = 1.0) -> Wait:
        """`built`: how far the random queue has built up towards its stationary level."""
        backlog = max(0.0, in_system - self.slots) / self.capacity
        rho = min(RHO_CAP, rate / self.capacity) if self.capacity > 0 else RHO_CAP
        if rho <= 0:
            return Wait(backlog, 0.0, 0.0)
        p = min(1.0, self.occupancy(rate).p_full * built)
        decay = self.capacity * (1.0 - rho) * 2.0 / (1.0 + self.cs2)
        return Wait(backlog, p, decay)

    def waiting(self, in_system: float, rate: float, built: float = 1.0) -> float:
        """Mean requests waiting (what the engine's `num_requests_waiting` averages to)."""
        return max(0.0, in_system - self.slots) + self.occupancy(rate).waiting * built

    def scrape(
        self, in_system: float, rate: float, rng: random.Random, built: float = 1.0
    ) -> tuple[int, int, float]:
        """What one scrape at a random moment reads: (waiting, running, KV use).

        The engine's gauges are integers that move with every arrival and completion; the
        control law reacts to what single scrapes show (its hard-saturation rule, the max
        over its terms), not to their mean, so the fluid engine hands it draws: requests in
        the replica from its stationary distribution at its arrival rate (`occupancy`),
        running up to its slots and waiting beyond, plus the fluid backlog (with a spread)
        when there is one.
        """
        return self.scrapes(in_system, rate, rng, built, 1)[0]

    def scrapes(
        self, in_system: float, rate: float, rng: random.Random, built: float, count: int
    ) -> list[tuple[int, int, float]]:
        """`scrape` for `count` replicas in the same state (one draw each)."""
        backlog = max(0.0, in_system - self.slots)
        slots = int(self.slots)
        occupancy = self.occupancy(rate) if backlog <= 0.0 else None
        spread = math.sqrt(backlog + 1.0)
        result = []
        for _ in range(count):
            if occupancy is None:
                waiting = max(0, round(backlog + spread * rng.gauss(0.0, 1.0)))
                running = slots
            else:
                n = occupancy.draw(rng)
                running = min(n, slots)
                waiting = round((n - running) * built)
            # Requests that arrived during the step under way wait for the next one to be
            # admitted: the engine counts them as waiting too.
            waiting += _count(rate * self.step_s(running) * rng.random(), rng)
            result.append((waiting, running, self.kv_usage(running)))
        return result

    def ttft(self, in_system: float, rate: float, built: float = 1.0) -> Ttft:
        running = min(max(in_system, 0.0), self.slots)
        decode = self.a_s + self.decode_b_s * running
        mean_step = self.step_s(running)
        token = self.prefill_s_per_token
        # The prompts that arrive while it waits for the step under way are prefilled with
        # it: each second of that rest adds rate * mean prompt tokens to its own step.
        stretch = 1.0 + rate * self.mix.prompt.mean * token
        residual = tuple(
            (width * stretch, share) for width, share in self._steps(decode, mean_step, rate, token)
        )
        busy = 1.0 - math.exp(-running)
        prompts = tuple((token * _prompt_at(self.mix, q), w) for q, w in PROMPT_STRATA)
        return Ttft(decode, residual, busy, self.wait(in_system, rate, built), prompts)

    def _steps(
        self, decode: float, mean_step: float, rate: float, token: float
    ) -> tuple[tuple[float, float], ...]:
        """The length of the step an arrival lands in, by strata: steps that admit prompts
        are longer, and an arrival lands in a step in proportion to its length."""
        admitted = rate * mean_step  # prompts per step (Poisson)
        if admitted <= 1e-9 or token <= 0:
            return ((mean_step, 1.0),)
        with_prompts = 1.0 - math.exp(-admitted)
        in_prefill = max(0.0, min(1.0, 1.0 - (1.0 - with_prompts) * decode / mean_step))
        per_step = admitted / with_prompts  # prompts in a step that has some
        cv2 = self.mix.prompt.cv2 / per_step
        sigma2 = math.log1p(cv2)
        mean_sum = per_step * self.mix.prompt.mean
        median_biased = mean_sum * math.exp(sigma2 / 2.0)  # size-biased: median * e^sigma2
        sigma = math.sqrt(sigma2)
        strata = [(decode, 1.0 - in_prefill)]
        for q, share in _SIZE_BIASED_STRATA:
            tokens = median_biased * math.exp(sigma * _NORMAL.inv_cdf(q))
            strata.append((decode + token * tokens, in_prefill * share))
        return tuple(strata)


_SIZE_BIASED_STRATA = ((0.15, 0.3), (0.5, 0.4), (0.85, 0.25), (0.98, 0.05))


@dataclass(frozen=True, slots=True)
class Occupancy:
    """Requests in one replica, stationary at one arrival rate: a birth-death chain with
    births at the rate and deaths at mu(n) (`FastReplica.completion_rate`), capacity beyond
    the slots. `cdf[n]` is P(N <= n) up to the slots; beyond, the tail is geometric."""

    p_full: float  # P(N >= slots): an arrival waits for a slot
    running: float  # E[min(N, slots)]
    waiting: float  # E[max(0, N - slots)]
    cdf: tuple[float, ...]
    ratio: float  # arrivals / capacity: the geometric tail's ratio

    def draw(self, rng: random.Random) -> int:
        u = rng.random()
        slots = len(self.cdf) - 1
        if u <= self.cdf[-1]:
            low, high = 0, slots
            while low < high:
                middle = (low + high) // 2
                if self.cdf[middle] < u:
                    low = middle + 1
                else:
                    high = middle
            return low
        if self.ratio <= 0:
            return slots
        # the tail beyond the slots: geometric with this ratio
        rest = (u - self.cdf[-1]) / max(1e-12, 1.0 - self.cdf[-1])
        return slots + int(math.log(max(1e-12, 1.0 - rest)) / math.log(self.ratio))


# By model identity (each entry keeps its model, so an id is never reused while cached).
_OCCUPANCY: dict[int, tuple[FastReplica, list[Occupancy]]] = {}
_GRID = 240


def _occupancy_table(model: FastReplica) -> list[Occupancy]:
    """Occupancy at every RHO_CAP * i / (_GRID - 1) of capacity (computed once per model)."""
    slots = int(model.slots)
    rates = [model.completion_rate(k) for k in range(1, slots + 1)]
    table = []
    for i in range(_GRID):
        rho = RHO_CAP * i / (_GRID - 1)
        arrival = rho * model.capacity
        if arrival <= 0:
            table.append(Occupancy(0.0, 0.0, 0.0, (1.0,) * (slots + 1), 0.0))
            continue
        logs = [0.0]
        for mu in rates:  # log of prod(arrival / mu(k)), k = 1..n
            logs.append(logs[-1] + math.log(arrival / mu))
        top = max(logs)
        weights = [math.exp(v - top) for v in logs]
        ratio = arrival / model.capacity
        tail = weights[-1] * ratio / (1.0 - ratio)  # n > slots
        total = sum(weights) + tail
        probabilities = [w / total for w in weights]
        cdf, acc = [], 0.0
        for value in probabilities:
            acc += value
            cdf.append(acc)
        p_full = (weights[-1] + tail) / total
        running = sum(n * p for n, p in enumerate(probabilities)) + slots * tail / total
        waiting = weights[-1] / total * ratio / (1.0 - ratio) ** 2
        table.append(Occupancy(p_full, running, waiting, tuple(cdf), ratio))
    return table


def _count(mean: float, rng: random.Random) -> int:
    """A Poisson draw with this mean (normal approximation for large means)."""
    if mean <= 0:
        return 0
    if mean > 20:
        return max(0, round(mean + math.sqrt(mean) * rng.gauss(0.0, 1.0)))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _prompt_at(mix: Mix, q: float) -> float:
    spec = mix.prompt.spec
    value = spec.median * math.exp(spec.sigma * _NORMAL.inv_cdf(q))
    return min(spec.max, max(spec.min, value))
