"""`heliostat status`: one row per connected Envoy, like `istioctl proxy-status`.

Per resource type a cell says whether the node has ACKed what heliostat last sent it
(`SYNCED`), is still to answer (`SENT`), or rejected it (`NACKED`, with the error in the
last column), followed by the short version it holds, so two nodes of one group can be seen
to agree at a glance.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from heliostat.ops import table

TYPES = ("CDS", "EDS", "LDS", "RDS")


def type_cell(status: Mapping[str, Any] | None) -> str:
    if status is None:
        return "NOT SENT"
    version = str(status.get("acked_version") or "")[:8] or "-"
    if status.get("in_sync"):
        state = "SYNCED"
    elif status.get("last_nack"):
        state = "NACKED"
    elif status.get("sent_version"):
        state = "SENT"
    else:
        state = "NOT SENT"
    return f"{state} {version}"


def _age(since: float, now: float) -> str:
    seconds = max(0, int(now - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _nack(node: Mapping[str, Any]) -> str | None:
    for name in TYPES:
        nack = node["types"].get(name, {}).get("last_nack")
        if nack:
            detail = nack.get("error", nack) if isinstance(nack, Mapping) else nack
            return f"{name}: {detail}"
    return None


def rows(nodes: Sequence[Mapping[str, Any]], now: float) -> list[list[object]]:
    return [
        [
            node["node_id"],
            node.get("region") or "-",
            node.get("role"),
            node.get("mode"),
            _age(float(node["connected_at"]), now),
            *(type_cell(node["types"].get(name)) for name in TYPES),
            _nack(node),
        ]
        for node in nodes
    ]


def as_json(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "node_id": n["node_id"],
            "region": n.get("region"),
            "role": n.get("role"),
            "mode": n.get("mode"),
            "group": n.get("group"),
            "peer": n.get("peer"),
            "connected_at": n["connected_at"],
            "in_sync": n.get("in_sync"),
            "types": {
                name: {
                    "state": type_cell(status).split(" ")[0],
                    "acked_version": status.get("acked_version"),
                    "sent_version": status.get("sent_version"),
                    "last_nack": status.get("last_nack"),
                }
                for name, status in sorted(n["types"].items())
            },
        }
        for n in nodes
    ]


def render(nodes: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    if not nodes:
        return "no Envoy is connected\n"
    header = ["NODE", "REGION", "ROLE", "XDS", "CONNECTED", *TYPES, "LAST NACK"]
    return table.render(header, rows(nodes, time.time() if now is None else now))
