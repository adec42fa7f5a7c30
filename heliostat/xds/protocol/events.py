"""What a stream's protocol state reports besides responses: ACKs, NACKs, stale requests.

The protocol objects never log or count; they return events and let the I/O adapter decide
what to do with them (log a NACK, bump a metric, update the status page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from heliostat.xds.resources.types import TypeUrl

R = TypeVar("R")


class EventKind(StrEnum):
    SENT = "sent"
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"
    HELD = "held"  # a change was not sent because that content was NACKed before
    UNKNOWN_TYPE = "unknown_type"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    type_url: TypeUrl | str
    version: str = ""
    nonce: str = ""
    detail: str = ""


@dataclass(slots=True)
class Outcome(Generic[R]):
    responses: list[R] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def extend(self, other: Outcome[R]) -> None:
        self.responses.extend(other.responses)
        self.events.extend(other.events)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A NACK as an operator needs it: which node, which version, what Envoy said."""

    version: str
    nonce: str
    error: str
    at: float


@dataclass(slots=True)
class TypeStatus:
    """Per node and type: what was sent, what the node applied, what it rejected."""

    subscribed: int | None = None  # None: wildcard
    sent_version: str = ""
    acked_version: str = ""
    pending_nonce: str = ""
    last_rejection: Rejection | None = None
    responses: int = 0
    # Delta EDS with LEDS: assignments the node holds under a pending version, until the
    # stream settles (heliostat.xds.protocol.held); a reconnect then gets their endpoints.
    settling: int = 0

    def as_json(self) -> dict[str, object]:
        rejection = self.last_rejection
        return {
            "subscribed": "*" if self.subscribed is None else self.subscribed,
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "pending_nonce": self.pending_nonce,
            "responses": self.responses,
            "settling": self.settling,
            "in_sync": bool(self.sent_version) and self.sent_version == self.acked_version,
            "last_nack": None
            if rejection is None
            else {"version": rejection.version, "error": rejection.error, "at": rejection.at},
        }
