"""The scenario file's shape: a planet (regions, replicas, demand, events) and how to play it.

Strict like the policy file (unknown keys, wrong types and bad values are errors, each at its
line); rules that relate one part to another are in `loader.py`. Durations read as the
policy's do (`500ms`, `2s`, `5m`, `17h`); event times (`at`, `until`) are durations since
the start, which is `start_hour` (UTC); demand curves and peak hours are UTC hours.

Units: demand in requests per second per origin region (the region whose users send them);
RTT in milliseconds, symmetric, either side of a pair; GPUs per replica only price a
replica (GPU-hours, the pool of the scaling loop).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from heliostat.policy.fields import Duration, Name, Section

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
Count = Annotated[int, Field(ge=0, strict=True)]
PositiveCount = Annotated[int, Field(ge=1, strict=True)]
Hour = Annotated[float, Field(ge=0, lt=24, allow_inf_nan=False, strict=True)]


class EngineKnobs(Section):
    """One replica's engine, in `heliostat.sim.engine.EngineConfig`'s own names and units."""

    max_num_seqs: PositiveCount = 256
    num_gpu_blocks: PositiveCount = 16384
    block_size: PositiveCount = 16
    speed: PositiveFloat = 1.0
    max_num_batched_tokens: PositiveCount = 8192
    base_step_ms: NonNegativeFloat = 25.0
    per_seq_ms: NonNegativeFloat = 0.5
    per_ctx_ktoken_ms: NonNegativeFloat = 0.1
    prefill_ms_per_token: NonNegativeFloat = 0.25


class TokenSpread(Section):
    """A log-normal token count: `median`, log-space `sigma`, clipped to [min, max]."""

    median: PositiveFloat
    sigma: NonNegativeFloat = 0.0
    min: PositiveCount = 1
    max: PositiveCount = 100_000

    @model_validator(mode="after")
    def _ordered(self) -> TokenSpread:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ModelSpec(Section):
    """The one model the planet serves: its replicas' engine and the requests it gets."""

    name: Name = "llama-70b"
    gpus_per_replica: PositiveCount = 8
    engine: EngineKnobs = EngineKnobs()
    prompt_tokens: TokenSpread = TokenSpread(median=300, sigma=0.8, min=16, max=4000)
    output_tokens: TokenSpread = TokenSpread(median=48, sigma=0.5, min=4, max=512)
    # Share of requests sent as `x-priority: batch` (they take the model's batch cluster).
    batch_share: Fraction = 0.0
    # Groups of users sharing a system prompt (inference-perf's shared_prefix): each request
    # belongs to one of `prefix_groups` groups (uniformly), and its prompt is its group's
    # `prefix_tokens` tokens followed by `prompt_tokens` of its own. Played request by
    # request only (the discrete engine: each replica's prefix cache holds what it holds, and
    # ring hash places a request by its prefix's hash); the fluid engine prefills every
    # prompt in full. 0: every prompt its own.
    prefix_groups: Count = 0
    prefix_tokens: Count = 0


class Slo(Section):
    """Time to first token: `ttft_ms` within a region (the policy's), `end_to_end_ms` as the
    user sees it (cross-region round trip included); `network_budget_ms` is the policy's."""

    ttft_ms: PositiveFloat = 800.0
    end_to_end_ms: PositiveFloat = 1200.0
    network_budget_ms: NonNegativeFloat = 150.0


class Region(Section):
    rtt_ms: dict[Name, NonNegativeFloat] = Field(default_factory=dict)
    # Replicas of the model here; 0 makes an edge region (gateways, no GPUs).
    replicas: Count = 0
    # Envoy gateways of the region (the number of Envoys sharing its users: each counts its
    # own in-flight requests, circuit breakers and outlier ejections). Default: `gateways`.
    gateways: PositiveCount | None = None


class Demand(Section):
    """One origin region's requests per second over the day, either

    - `curve`: 24 values, requests/s at each UTC hour, linear in between (wrapping at 24 h), or
    - `peak_rps` + `peak_hour` (UTC) + `trough` (share of the peak at the opposite hour): a
      cosine, highest at the peak hour, lowest 12 hours later.
    """

    curve: tuple[NonNegativeFloat, ...] | None = None
    peak_rps: NonNegativeFloat | None = None
    peak_hour: Hour = 20.0
    trough: Fraction = 0.3

    @model_validator(mode="after")
    def _one_shape(self) -> Demand:
        if (self.curve is None) == (self.peak_rps is None):
            raise ValueError("give either `curve` (24 hourly values) or `peak_rps`")
        if self.curve is not None and len(self.curve) != 24:
            raise ValueError(f"`curve` needs 24 hourly values, got {len(self.curve)}")
        return self


class Failure(StrEnum):
    """How a lost region's replicas fail a connection: packets vanish (the connect timeout
    runs out) or the connection is refused at once (a round trip)."""

    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


class RegionLoss(Section):
    """Every replica of `region` dies at `at` (requests in flight fail) and comes back,
    empty, at `until`. With `gateways: lost` its gateways die too and its users reach the
    nearest surviving region's gateways once GeoDNS moved them (`dns_failover`)."""

    kind: Literal["region_loss"]
    region: Name
    at: Duration
    until: Duration | None = None
    failure: Failure = Failure.BLACKHOLE
    gateways: Literal["keep", "lost"] = "keep"


class FlashCrowd(Section):
    """Demand of `regions` (all when empty) multiplied by `factor`, reached linearly over
    `ramp`, held for `hold`, then back over `ramp`."""

    kind: Literal["flash_crowd"]
    at: Duration
    regions: tuple[Name, ...] = ()
    factor: PositiveFloat = 2.0
    ramp: Duration = 60.0
    hold: Duration = 600.0


class Canary(Section):
    """`share` of `region`'s replicas run a new build from `at` to `until`: `speed_factor`
    times as fast, failing `error_rate` of their requests with a 500."""

    kind: Literal["canary"]
    region: Name
    at: Duration
    until: Duration | None = None
    share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = 0.1
    speed_factor: PositiveFloat = 1.0
    error_rate: Fraction = 0.0


Event = Annotated[RegionLoss | FlashCrowd | Canary, Field(discriminator="kind")]


class RegionLimits(Section):
    min: Count = 0
    max: Count | None = None


class ScalingSignal(StrEnum):
    """What the autoscaler reads: `law`, the scaling signals `serve` exports from its control
    law (`heliostat.balance.scaling`, in endpoint units today); `gateway_rates`, requests/s
    measured at each region's gateways over replicas' requests/s at capacity (the units the
    rate-based law of issue 10 will export)."""

    LAW = "law"
    GATEWAY_RATES = "gateway_rates"


class Scaling(Section):
    """The scaling loop: an autoscaler reading heliostat's scaling signals every `interval`,
    adding replicas that serve after `provisioning_delay`, draining replicas it no longer
    wants after it has wanted fewer for `scale_down_after`, never holding more than
    `pool_gpus` (default: the fleet's GPUs), at most `max_step` replicas per region per
    action, within each region's `limits`."""

    enabled: bool = False
    signal: ScalingSignal = ScalingSignal.LAW
    target_utilisation: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = 0.7
    interval: Duration = 60.0
    provisioning_delay: Duration = 300.0
    scale_down_after: Duration = 600.0
    pool_gpus: PositiveCount | None = None
    max_step: PositiveCount = 8
    limits: dict[Name, RegionLimits] = Field(default_factory=dict)


class PolicyName(StrEnum):
    HELIOSTAT = "heliostat"
    NEAREST_REGION = "nearest_region"
    LEAST_REQUEST = "least_request"
    PICKER = "picker"


class Mode(StrEnum):
    FLUID = "fluid"
    DISCRETE = "discrete"


class Scenario(Section):
    name: Name
    description: str = ""
    seed: Count = 1
    duration: Duration = 86_400.0
    # UTC hour of day at the start: demand curves and peak hours are in UTC.
    start_hour: Hour = 0.0
    # Fluid engine time step (the discrete engine is event by event).
    step: Duration = 0.5
    mode: Mode = Mode.FLUID
    # Default number of Envoy gateways per region.
    gateways: PositiveCount = 16
    # Time from a new view to Envoy applying it (xDS push), and from a region's loss to
    # GeoDNS answering with another region (nearest_region, and lost gateways).
    push_delay: Duration = 0.1
    dns_failover: Duration = 60.0
    model: ModelSpec = ModelSpec()
    slo: Slo = Slo()
    regions: dict[Name, Region]
    demand: dict[Name, Demand]
    events: tuple[Event, ...] = ()
    # The model's section of the heliostat policy (thresholds, overflow, signals, retries,
    # outlier_detection, circuit_breakers, affinity...): validated as the policy file is.
    policy: dict[str, Any] = Field(default_factory=dict)
    scaling: Scaling = Scaling()
    policies: tuple[PolicyName, ...] = tuple(PolicyName)

    def gateways_of(self, region: str) -> int:
        own = self.regions[region].gateways
        return own if own is not None else self.gateways

    def rtt_ms(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        if b in self.regions[a].rtt_ms:
            return self.regions[a].rtt_ms[b]
        return self.regions[b].rtt_ms[a]
