"""One report.md section per benchmark: a table of its documented fields and its plots.

The JSON files are written by different benchmarks, possibly by an older run or cut short,
so every reader here takes what is there: a missing or non-numeric value becomes an em dash
in the table and is left out of the plots, never an exception. What each section shows is
the issue's documented fields; anything else a benchmark adds stays in its JSON file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench import report_plots as plots
from bench.common import table

MISSING = "—"

Renderer = Callable[[Mapping[str, Any], Path], list[str]]


def number(value: Any) -> float | None:
    """A JSON number as float; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def cell(value: Any, *, share: bool = False) -> object:
    """A table cell: numbers as numbers (shares in 0-1 as percentages), else a dash."""
    found = number(value)
    if found is None:
        return value if isinstance(value, str) and value else MISSING
    if share and 0.0 <= found <= 1.0:
        return f"{found:.1%}"
    if isinstance(value, int):
        return value
    return found


def records(value: Any) -> list[Mapping[str, Any]]:
    """The dicts of a JSON list (anything else in it is skipped)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def image(name: str | None, alt: str) -> list[str]:
    return [f"![{alt}]({name})"] if name else []


# -- scale -------------------------------------------------------------------------------------


def scale(data: Mapping[str, Any], out: Path) -> list[str]:
    cases = records(data.get("cases"))
    if not cases:
        return ["no cases in scale.json"]
    rows = [
        [
            cell(c.get("endpoints")),
            cell(c.get("views")),
            cell(c.get("full_tick_ms")),
            cell(c.get("incremental_tick_ms")),
            cell(c.get("full_tick_leds_ms")),
            cell(c.get("incremental_tick_leds_ms")),
            cell(c.get("full_changed_share"), share=True),
            cell(c.get("incremental_changed_share"), share=True),
            cell(c.get("clusters_per_view")),
            cell(c.get("eds_bytes_per_view")),
        ]
        for c in cases
    ]
    points = [
        (int(e), int(v), number(c.get("full_tick_ms")), number(c.get("incremental_tick_ms")))
        for c in cases
        if (e := number(c.get("endpoints"))) is not None
        and (v := number(c.get("views"))) is not None
    ]
    note = (
        "Control law + translation + serialization per tick (`ControlLoop.tick` as `serve` "
        "runs it), CPU ms, median of repeated ticks. Full: every endpoint's EDS entry "
        "changes; incremental: 10% of them. Without LEDS (`serve --no-leds`), then with the "
        "LEDS form `serve` builds by default."
    )
    return [
        note,
        table(
            [
                "endpoints",
                "views",
                "full tick ms",
                "incremental tick ms",
                "full, LEDS",
                "incremental, LEDS",
                "changed (full)",
                "changed (incr.)",
                "clusters/view",
                "EDS bytes/view",
            ],
            rows,
        ),
        *image(plots.scale(out, points), "tick cost against endpoints"),
    ]


# -- fanout ------------------------------------------------------------------------------------


def fanout(data: Mapping[str, Any], out: Path) -> list[str]:
    cases = records(data.get("cases"))
    if not cases:
        return ["no cases in fanout.json"]
    rows = [
        [
            cell(c.get("clients")),
            cell(c.get("mode")),
            cell(c.get("ack_p50_ms")),
            cell(c.get("ack_p99_ms")),
            cell(c.get("ack_max_ms")),
            cell(c.get("bytes_per_push")),
            cell(c.get("rss_mb")),
            cell(c.get("rss_idle_mb")),
            cell(c.get("rss_peak_mb")),
        ]
        for c in cases
    ]
    points = [
        (
            int(clients),
            str(c.get("mode", "?")),
            number(c.get("ack_p50_ms")),
            number(c.get("ack_p99_ms")),
            number(c.get("bytes_per_push")),
            number(c.get("rss_mb")),
        )
        for c in cases
        if (clients := number(c.get("clients"))) is not None
    ]
    endpoints = cell(data.get("endpoints"))
    note = (
        f"One weight change (an endpoint drained) pushed by a real `heliostat serve` "
        f"({endpoints} endpoints) to N concurrent ADS clients in a separate process; ms "
        "from the change to each client's ACK of the new EDS, bytes each client received "
        "for it, serve's resident memory with every client subscribed (before any; its peak)."
    )
    return [
        note,
        table(
            [
                "clients",
                "mode",
                "ACK p50 ms",
                "ACK p99 ms",
                "ACK max ms",
                "bytes/push",
                "RSS MB",
                "RSS idle MB",
                "RSS peak MB",
            ],
            rows,
        ),
        *image(plots.fanout(out, points), "ACK latency and bytes per push"),
        *[
            f"{cell(c.get('clients'))} {cell(c.get('mode'))} clients: **failed**: "
            f"{cell(c.get('error'))}"
            for c in records(data.get("failed_cases"))
        ],
    ]


# -- convergence -------------------------------------------------------------------------------


def _samples(value: Any) -> tuple[list[float], int | None]:
    """Samples given as a list of ms values, or only as a count."""
    if isinstance(value, list):
        values = [v for v in (number(x) for x in value) if v is not None]
        return values, len(values)
    count = number(value)
    return [], None if count is None else int(count)


def convergence(data: Mapping[str, Any], out: Path) -> list[str]:
    values, count = _samples(data.get("samples"))
    row: list[object] = [
        cell(data.get("interval_s")),
        MISSING if count is None else count,
        cell(data.get("p50_ms")),
        cell(data.get("p99_ms")),
        cell(max(values)) if values else MISSING,
    ]
    series = {"samples": values}
    delta = data.get("delta")
    if isinstance(delta, Mapping):
        delta_values, _ = _samples(delta.get("samples"))
        if delta_values:
            series = {"sotw": values, "delta": delta_values}
    note = (
        "Time from a change at a replica to every gateway Envoy serving the new weight "
        "(signal interval as given)."
    )
    return [
        note,
        table(["interval s", "samples", "p50 ms", "p99 ms", "max ms"], [row]),
        *image(
            plots.cdf(out, "convergence.png", series, "Convergence: replica change -> Envoy"),
            "CDF of convergence times",
        ),
    ]


# -- failover and overhead ---------------------------------------------------------------------


def failover(data: Mapping[str, Any], out: Path) -> list[str]:
    requests, failed = number(data.get("requests")), number(data.get("failed_requests"))
    share = failed / requests if requests and failed is not None else None
    recover = number(data.get("recover_ms"))
    row = [
        cell(data.get("requests")),
        cell(data.get("failed_requests")),
        MISSING if share is None else f"{share:.2%}",
        cell(data.get("recover_ms")),
    ]
    panels: list[tuple[str, dict[str, float]]] = []
    if requests is not None and failed is not None:
        panels.append(("requests", {"sent": requests, "failed": failed}))
    if recover is not None:
        panels.append(("recovery ms", {"recover": recover}))
    note = "A region taken down under load: requests that failed and time until traffic recovered."
    return [
        note,
        table(["requests", "failed", "failed share", "recover ms"], [row]),
        *image(plots.bars(out, "failover.png", panels), "failover"),
    ]


def overhead(data: Mapping[str, Any], out: Path) -> list[str]:
    keys = ("bare_p50_ms", "bare_p99_ms", "heliostat_p50_ms", "heliostat_p99_ms")
    values = {k: number(data.get(k)) for k in keys}
    added = [
        MISSING if b is None or h is None else round(h - b, 3)
        for b, h in (
            (values["bare_p50_ms"], values["heliostat_p50_ms"]),
            (values["bare_p99_ms"], values["heliostat_p99_ms"]),
        )
    ]
    panels: list[tuple[str, dict[str, float]]] = []
    for quantile in ("p50", "p99"):
        pair = {
            label: v
            for label, v in (
                ("bare", values[f"bare_{quantile}_ms"]),
                ("heliostat", values[f"heliostat_{quantile}_ms"]),
            )
            if v is not None
        }
        panels.append((f"latency {quantile} ms", pair))
    note = "Request latency through Envoy with static config (bare) and with heliostat's."
    return [
        note,
        table(
            [
                "bare p50 ms",
                "bare p99 ms",
                "heliostat p50 ms",
                "heliostat p99 ms",
                "added p50",
                "added p99",
            ],
            [[cell(data.get(k)) for k in keys] + added],
        ),
        *image(plots.bars(out, "overhead.png", panels), "proxy latency, bare and heliostat"),
    ]


RENDERERS: dict[str, Renderer] = {
    "scale": scale,
    "fanout": fanout,
    "convergence": convergence,
    "failover": failover,
    "overhead": overhead,
}
