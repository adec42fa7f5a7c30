"""The heliostat policy of a planet: its regions, its model's section, one endpoint per replica.

This is the policy `serve` would be given for the fleet as it stands; when the fleet changes
(the autoscaler adds or removes replicas) a new one is built, as a discovery source or an
operator's edit would. Replica addresses are synthetic and stable: replica `n` of the region
at index `i` (in sorted order) is `10.i.(n // 250).(n % 250 + 1):8000`, never reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from heliostat.planet.scenario import Scenario
from heliostat.policy import Endpoint, Policy

PORT = 8000
# Keys of the model's policy section the scenario decides itself.
RESERVED_KEYS = ("name", "endpoints", "slo", "engine")


@dataclass(frozen=True, slots=True)
class ReplicaId:
    region: str
    index: int
    version: str | None = None


def region_index(scenario: Scenario, region: str) -> int:
    return sorted(scenario.regions).index(region)


def address_of(scenario: Scenario, replica: ReplicaId) -> str:
    i = region_index(scenario, replica.region)
    n = replica.index
    return f"10.{i}.{n // 250}.{n % 250 + 1}:{PORT}"


def policy_document(scenario: Scenario, endpoints: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The policy file heliostat would read, as data (also used to validate the scenario)."""
    regions = {
        name: {"rtt_ms": dict(region.rtt_ms)} for name, region in sorted(scenario.regions.items())
    }
    model = {
        "name": scenario.model.name,
        "engine": "vllm",
        "slo": {
            "ttft_ms": scenario.slo.ttft_ms,
            "network_budget_ms": scenario.slo.network_budget_ms,
        },
        **{k: v for k, v in scenario.policy.items() if k not in RESERVED_KEYS},
        "endpoints": [dict(e) for e in endpoints],
    }
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": scenario.name},
        "spec": {"regions": regions, "models": [model]},
    }


def endpoint_entries(scenario: Scenario, replicas: Iterable[ReplicaId]) -> list[dict[str, Any]]:
    slots = scenario.model.engine.max_num_seqs
    entries = []
    for replica in replicas:
        entry: dict[str, Any] = {
            "address": address_of(scenario, replica),
            "region": replica.region,
            "slots": slots,
        }
        if replica.version is not None:
            entry["version"] = replica.version
        entries.append(entry)
    return entries


def build_policy(scenario: Scenario, replicas: Iterable[ReplicaId]) -> Policy:
    """The policy for these replicas; the scenario was validated, so this does not fail
    unless no replica is left at all (a policy needs an endpoint)."""
    document = policy_document(scenario, endpoint_entries(scenario, replicas))
    return Policy.model_validate(document)


class PolicyCache:
    """Builds policies for fleets, reusing the previous one when the fleet did not change."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._key: tuple[ReplicaId, ...] | None = None
        self._policy: Policy | None = None

    def policy(self, replicas: Iterable[ReplicaId]) -> Policy:
        key = tuple(sorted(replicas, key=lambda r: (r.region, r.index)))
        if self._policy is None or key != self._key:
            self._policy = _fast_build(self.scenario, key, self._policy)
            self._key = key
        return self._policy


def _fast_build(
    scenario: Scenario, replicas: tuple[ReplicaId, ...], previous: Policy | None
) -> Policy:
    """A new fleet's policy: only the endpoints are rebuilt once a first policy exists
    (validating the whole document again costs as much as a control tick)."""
    if previous is None or not replicas:
        return build_policy(scenario, replicas)
    slots = scenario.model.engine.max_num_seqs
    endpoints = tuple(
        Endpoint.model_validate(
            {
                "address": address_of(scenario, r),
                "region": r.region,
                "slots": slots,
                "version": r.version,
            }
        )
        for r in replicas
    )
    model = previous.spec.models[0].model_copy(update={"endpoints": endpoints})
    spec = previous.spec.model_copy(update={"models": (model,)})
    return previous.model_copy(update={"spec": spec})
