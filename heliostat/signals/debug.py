"""The signals part of the admin `/debug/state` page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heliostat.signals.adapters import UNREPORTED
from heliostat.signals.record import Signal


def debug_view(
    signals: Mapping[tuple[str, str], Signal],
    now: float,
    stale_after: Mapping[str, float] | float | None = None,
) -> dict[str, Any]:
    """Every endpoint's latest signal and its age, as JSON-able data grouped by model.

    `stale_after` (seconds, per model or one for all) adds a `stale` flag when given. Values are
    finite by construction (adapters reject NaN/inf), so `json.dumps` never sees NaN.
    """
    models: dict[str, list[dict[str, Any]]] = {}
    for (model, address), signal in sorted(signals.items()):
        age = signal.age(now)
        entry: dict[str, Any] = {
            "address": address,
            "engine": signal.engine,
            "waiting": signal.waiting,
            "running": signal.running,
            "kv_usage": signal.kv_usage,
            "prefix_hit_rate": signal.prefix_hit_rate,
            "max_num_seqs": signal.max_num_seqs,
            "num_gpu_blocks": signal.num_gpu_blocks,
            "block_size": signal.block_size,
            "scraped_at": signal.scraped_at,
            "age_s": None if age is None else round(age, 3),
            "error": signal.error,
            "error_detail": signal.error_detail,
            "consecutive_failures": signal.consecutive_failures,
            "served_total": signal.served_total,
            "served_rate": signal.served_rate,
            "kv_usage_max": signal.kv_usage_max,
            "missing": sorted(signal.missing),
            "page": signal.page,
            "engines": signal.engines,
            "read_as": signal.read_as,
            "lora": signal.lora,
            "signal_of": signal_of(signal),
        }
        limit = stale_after.get(model) if isinstance(stale_after, Mapping) else stale_after
        if limit is not None:
            entry["stale"] = signal.is_stale(now, limit)
        models.setdefault(model, []).append(entry)
    return {"now": now, "models": models}


def signal_of(signal: Signal) -> str | None:
    """Whose load the numbers are, when it is not plainly the policy model's own.

    A LoRA adapter has no queue of its own: vLLM (and SGLang) report per base model, so an
    adapter's waiting, running and KV use are the whole server's.
    """
    if signal.lora is None:
        return None
    if signal.lora == UNREPORTED:
        detail = f"{signal.engine} reports nothing per adapter"
    else:
        detail = f"the adapter is {signal.lora} per vllm:lora_requests_info"
    return (
        f"base model {signal.read_as!r}: LoRA adapter {signal.model!r} shares its queue and "
        f"KV cache ({detail})"
    )
