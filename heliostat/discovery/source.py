"""One interface for where a model's endpoints come from, and the policy they make. Pure.

A model lists static endpoints, a Kubernetes selector, or both. Each is an `EndpointSource`
that answers, per model, with `ModelEndpoints`; `effective_policy` folds every source's answer
into the policy the rest of heliostat reads (the control law, the translators, the scrapers
never learn where an endpoint came from). Static endpoints win over discovered ones at the
same address: what an operator wrote down is not overridden by a label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from heliostat.discovery.slices import ModelEndpoints
from heliostat.policy.limits import MAX_ENDPOINTS_PER_MODEL
from heliostat.policy.schema import Endpoint, Model, Policy


class EndpointSource(Protocol):
    """Something that knows replicas of some models (the policy file, the cluster)."""

    def endpoints(self, model: Model) -> ModelEndpoints | None:
        """This source's replicas of `model`, or None when it does not serve the model."""


class StaticEndpoints:
    """The endpoints written in the policy file."""

    def endpoints(self, model: Model) -> ModelEndpoints | None:
        return ModelEndpoints(model.endpoints) if model.endpoints else None


def effective_policy(policy: Policy, sources: Sequence[EndpointSource]) -> Policy:
    """`policy` with every model's endpoints taken from `sources`, in order (the first source
    to name an address owns it). A source's draining endpoints are drained by the policy, so
    Envoy marks them DRAINING and the control law gives them no new share."""
    models = tuple(_model(model, sources) for model in policy.spec.models)
    if all(new is old for new, old in zip(models, policy.spec.models, strict=True)):
        return policy
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"models": models})})


def _model(model: Model, sources: Sequence[EndpointSource]) -> Model:
    answers = [a for a in (source.endpoints(model) for source in sources) if a is not None]
    endpoints: dict[str, Endpoint] = {}
    draining: set[str] = set()
    for answer in answers:
        for endpoint in answer.endpoints:
            if endpoint.address in endpoints or len(endpoints) >= MAX_ENDPOINTS_PER_MODEL:
                continue
            endpoints[endpoint.address] = endpoint
            if endpoint.address in answer.draining:
                draining.add(endpoint.address)
    if tuple(endpoints.values()) == model.endpoints and not draining:
        return model  # the file's endpoints alone: the very same object, no copy
    drain = model.drain
    extra = sorted(draining - set(drain.endpoints))
    if extra:
        drain = drain.model_copy(update={"endpoints": (*drain.endpoints, *extra)})
    return model.model_copy(update={"endpoints": tuple(endpoints.values()), "drain": drain})


def discovered_by_model(
    policy: Policy, sources: Sequence[EndpointSource]
) -> Mapping[str, list[ModelEndpoints]]:
    """Every source's answer per model, for /debug/state."""
    return {
        m.name: [a for a in (s.endpoints(m) for s in sources) if a is not None]
        for m in policy.spec.models
    }
