"""What one replica saw, for tests and benchmarks to assert on (``GET /sim/stats``).

Prometheus metrics say what vLLM would say; these counters say what the experiment needs to
know and vLLM cannot: which region a request came from, which session, and how many requests
each fault swallowed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReplicaStats:
    received: int = 0
    """Inference requests that reached the replica (before faults and validation)."""
    served: int = 0
    """Requests answered with a complete generation."""
    rejected: int = 0
    """Requests answered 4xx (unknown model, bad body)."""
    faulted: Counter[str] = field(default_factory=Counter)
    """Requests swallowed by each fault kind."""
    aborted: int = 0
    """Requests dropped mid-flight (client gone, reset, shutdown)."""
    by_origin_region: Counter[str] = field(default_factory=Counter)
    """Received requests per ``x-heliostat-origin-region`` (requests without it are not here)."""
    by_session: Counter[str] = field(default_factory=Counter)
    """Received requests per ``x-session-id``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefix_queries: int = 0
    """Prompt tokens looked up in the prefix cache (served requests)."""
    prefix_hits: int = 0
    """Prompt tokens found in the prefix cache (served requests)."""
    prefix_hit_requests: int = 0
    """Served requests with at least one cached block."""
    rtt_delay_ms: float = 0.0
    """Total cross-region delay added, in milliseconds."""

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "served": self.served,
            "rejected": self.rejected,
            "faulted": dict(self.faulted),
            "aborted": self.aborted,
            "by_origin_region": dict(self.by_origin_region),
            "by_session": dict(self.by_session),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "prefix_cache": {
                "queries": self.prefix_queries,
                "hits": self.prefix_hits,
                "hit_requests": self.prefix_hit_requests,
                "hit_rate": self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0,
            },
            "rtt_delay_ms": self.rtt_delay_ms,
        }
