"""Policy -> `ScrapeTarget`s: the one place that knows the policy's `signals` section."""

from __future__ import annotations

from heliostat.policy.schema import Policy
from heliostat.samples import SourceKind
from heliostat.signals.record import ScrapeTarget


def targets_from_policy(policy: Policy) -> list[ScrapeTarget]:
    """One target per endpoint of every model, carrying the model's signal settings."""
    targets: list[ScrapeTarget] = []
    for model in policy.spec.models:
        sig = model.signals
        prometheus = sig.source is SourceKind.PROMETHEUS
        for endpoint in model.endpoints:
            targets.append(
                ScrapeTarget(
                    model=model.name,
                    address=endpoint.address,
                    engine=model.engine,
                    metrics_path=sig.metrics_path,
                    model_label=sig.base_model,
                    lora=sig.base_model is not None,
                    interval=sig.interval,
                    timeout=sig.timeout,
                    stale_after=sig.stale_after,
                    source=sig.source,
                    prometheus_url=sig.prometheus_url if prometheus else None,
                )
            )
    return targets


def policy_notes(policy: Policy) -> list[str]:
    """What `heliostat validate` should tell an operator about how models will be read.

    Not errors: facts about the signals a valid policy will get, here a LoRA adapter's, whose
    queue and KV use are its base model's (the whole server's).
    """
    notes = []
    for index, model in enumerate(policy.spec.models):
        base = model.signals.base_model
        if base is None:
            continue
        where = f"spec.models[{index}].signals.base_model"
        adapter = (
            "vllm:lora_requests_info says whether the adapter itself has running or waiting "
            "requests"
            if model.engine.value == "vllm"
            else f"{model.engine.value} reports nothing per adapter"
        )
        notes.append(
            f"{where}: {model.name!r} is a LoRA adapter of {base!r}: its queue, running and KV "
            f"signals are the base model's (the whole server's); {adapter}"
        )
    return notes
