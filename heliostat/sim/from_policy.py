"""Policy -> simulated replicas: one per endpoint, at the endpoint's own address."""

from __future__ import annotations

from heliostat.policy import Policy
from heliostat.sim.config import ReplicaConfig, RttFn


def replica_configs(
    policy: Policy, *, speed: float | None = None, regions: frozenset[str] | None = None
) -> list[ReplicaConfig]:
    """Every endpoint of every model as a replica. `speed` overrides every endpoint's knob;
    `regions` keeps only those regions' endpoints (one process per region lets a test or the
    demo take a whole region down by stopping its process).

    A simulated replica serves one model, so an address listed under two models is an error
    here (real multi-model servers are fine for `serve`).
    """
    configs: dict[str, ReplicaConfig] = {}
    for model in policy.spec.models:
        for endpoint in model.endpoints:
            if regions is not None and endpoint.region not in regions:
                continue
            if endpoint.address in configs:
                raise ValueError(
                    f"{endpoint.address}: listed under models {configs[endpoint.address].model!r} "
                    f"and {model.name!r}; a simulated replica serves one model"
                )
            knobs = endpoint.sim.model_dump(exclude_none=True) if endpoint.sim else {}
            if endpoint.slots is not None:
                knobs.setdefault("max_num_seqs", endpoint.slots)
            if speed is not None:
                knobs["speed"] = speed
            configs[endpoint.address] = ReplicaConfig.from_mapping(
                address=endpoint.address,
                region=endpoint.region,
                model=model.name,
                version=endpoint.version,
                sim=knobs,
            )
    return list(configs.values())


def rtt_from_policy(policy: Policy) -> RttFn:
    """Round trips the replicas add for requests that come from another region."""
    return policy.rtt_ms
