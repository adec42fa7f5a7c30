"""Policy -> `ScrapeTarget`s: the one place that knows the policy's `signals` section."""

from __future__ import annotations

from heliostat.policy.schema import Policy, SignalSourceKind
from heliostat.signals.record import Engine, ScrapeTarget


def targets_from_policy(policy: Policy) -> list[ScrapeTarget]:
    """One target per endpoint of every model, carrying the model's signal settings."""
    targets: list[ScrapeTarget] = []
    for model in policy.spec.models:
        sig = model.signals
        prometheus = sig.source is SignalSourceKind.PROMETHEUS
        engine: Engine = model.engine.value  # the same five names
        for endpoint in model.endpoints:
            targets.append(
                ScrapeTarget(
                    model=model.name,
                    address=endpoint.address,
                    engine=engine,
                    metrics_path=sig.metrics_path,
                    interval=sig.interval,
                    timeout=sig.timeout,
                    stale_after=sig.stale_after,
                    source="prometheus" if prometheus else "direct",
                    prometheus_url=sig.prometheus_url if prometheus else None,
                )
            )
    return targets
