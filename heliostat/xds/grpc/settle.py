"""When delta streams send what serves only a later reconnect: once no stream has a change
in flight.

With LEDS an assignment goes to a node under a pending version while its endpoints change,
and under its own version once the node holds them (heliostat.xds.protocol.held). That last
response changes nothing the node routes by; it lets a later reconnect skip re-sending the
endpoints. Sent as soon as a stream's endpoints were ACKed, it was a third of the responses
of a change and competed on the event loop with the streams still waiting for the change
itself (bench fanout: one change to 1,000 delta streams, ACK p99 425 ms with LEDS against
236 ms without). So a stream whose assignments are due to settle waits here until no
stream of the server has a response in flight (the change has reached every node), or
`longest_s` at most, so that a node that never ACKs delays the others only that long.

And only once the node's endpoints have been still for `quiet_s`. While an assignment is
pending on the node, an endpoint's change is one LEDS response; once it has settled, the
next change must first send it pending again (a node must never list a settled version
whose endpoints it lacks), then the endpoint: two responses per stream before the useful
one, and gRPC writes one message per stream per event-loop round. Settling after every
change made each change pay that (bench fanout, 1,000 delta streams, 2 cores: ~3x serve's
CPU per change of --no-leds, ACK p99 472 ms against 258 ms). Endpoints that keep moving
(weights follow the signals every tick) so stay pending and each change is one response;
a fleet at rest settles, so a reconnect to a restarted heliostat then re-sends nothing.
The price: a node reconnecting within `quiet_s` of a change to its endpoints is sent
that cluster's endpoints again (heliostat.xds.protocol.held), unless heliostat stopped
cleanly: on SIGTERM it settles every node at once before its streams end
(heliostat.xds.grpc.server: settle_before_stop), so only a crash pays that.

Why the first change after settling cannot be the LEDS response alone (checked 2026-12-06):
a settled node lists assignment A at version V, which says it holds the members V covers,
and a heliostat seeing that on a reconnect sends none of them. Send a member's change
without re-sending A pending first and the node holds the new member under V. A restarted
heliostat, or another replica, whose inputs give A's members back their old values (a
drain its state lacks, weights recomputed after the restart) has V again, trusts the node
and never sends what it lacks: a stale endpoint until that member changes again. Content
versions are what let another server trust V at all, so the repeat cannot be told apart,
and only a response to the node can withdraw the claim. That response cannot ride with
the LEDS one: a DeltaDiscoveryResponse has one type_url, which every resource in it must
match; nor go after it (a stream ending between the two leaves the same wrong claim), nor
go in the same gRPC write (one message per send operation, one send in flight per call).
With 1,000 delta streams its cost is the second message's whole path, not a round's wait:
py-spy of serve in the fan-out spends most samples in gRPC's send (a sendmsg per message)
and the ACK reads, a little in the protocol; the clients decode and ACK it too, on the
same 2 cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Protocol

LONGEST_S = 5.0  # a change reached 5,000 delta streams on 2 cores in ~2.6 s (p99)
# Endpoints unchanged this long on a node: it settles. Several signal intervals (2 s by
# default), so a fleet whose weights move on most ticks stays pending; short next to the
# time between restarts of heliostat, which is all the settled version is for.
QUIET_S = 30.0


class SettleGate:
    """Streams with a response in flight, and the streams waiting for there to be none."""

    __slots__ = ("_busy", "_waiting", "longest_s", "quiet_s")

    def __init__(self, longest_s: float = LONGEST_S, quiet_s: float = QUIET_S) -> None:
        self.longest_s = longest_s
        self.quiet_s = quiet_s
        self._busy: set[Hashable] = set()
        self._waiting: dict[Hashable, tuple[Callable[[], None], asyncio.TimerHandle]] = {}

    def busy(self, stream: Hashable, busy: bool) -> None:
        """Whether `stream` has a response in flight now; the last one done wakes the
        waiting streams."""
        if busy:
            self._busy.add(stream)
            return
        self._busy.discard(stream)
        if not self._busy:
            self._wake_all()

    def wait(self, stream: Hashable, wake: Callable[[], None]) -> None:
        """Call `wake` once no stream is busy (now, if none is), or after `longest_s`."""
        if stream in self._waiting:
            return
        if not self._busy:
            wake()
            return
        timer = asyncio.get_running_loop().call_later(self.longest_s, self._wake, stream)
        self._waiting[stream] = (wake, timer)

    def forget(self, stream: Hashable) -> None:
        """`stream` ended: it is neither busy nor waiting any more."""
        waiting = self._waiting.pop(stream, None)
        if waiting is not None:
            waiting[1].cancel()
        self.busy(stream, False)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _wake(self, stream: Hashable) -> None:
        waiting = self._waiting.pop(stream, None)
        if waiting is not None:
            waiting[1].cancel()
            waiting[0]()

    def _wake_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for wake, timer in waiting.values():
            timer.cancel()
            wake()


class Settles(Protocol):
    def in_flight(self) -> bool: ...

    def settle_due(self) -> bool: ...


class StreamSettling:
    """One stream's side of the gate: told after each step what the stream has in flight
    and whether it is due to settle; once it has been due for the gate's `quiet_s` without
    a break (an endpoint change in flight ends it), it waits at the gate, and `wake` is
    called once it may."""

    __slots__ = ("_busy", "_due_since", "_gate", "_quiet", "_stream", "_waiting", "_wake")

    def __init__(self, gate: SettleGate, stream: Settles, wake: Callable[[], None]) -> None:
        self._gate = gate
        self._stream = stream
        self._wake = wake
        self._busy = False
        self._waiting = False
        # Since when (loop time) the stream has been due without a break, or None. The
        # timer is not cancelled and made again each time that breaks (twice per stream and
        # change while endpoints move): it stays, and when it fires looks at `_due_since`.
        self._due_since: float | None = None
        self._quiet: asyncio.TimerHandle | None = None

    def step(self) -> None:
        stream = self._stream
        if stream.in_flight() is not self._busy:
            self._busy = not self._busy
            self._gate.busy(self, self._busy)
        if self._waiting:
            return
        if not stream.settle_due():
            self._due_since = None
        elif self._due_since is None:
            self._still()

    def woken(self) -> None:
        self._waiting = False

    def close(self) -> None:
        self._due_since = None
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None
        self._gate.forget(self)

    def _still(self) -> None:
        """Start timing how long the stream has been due to settle."""
        quiet_s = self._gate.quiet_s
        if quiet_s <= 0:
            self._quiet_over()
            return
        loop = asyncio.get_running_loop()
        self._due_since = now = loop.time()
        if self._quiet is None:
            self._quiet = loop.call_at(now + quiet_s, self._look)

    def _look(self) -> None:
        """The timer: over if the stream has been due for `quiet_s` by now, else wait on
        for the rest of the quiet of its latest stretch (if it is due at all)."""
        self._quiet = None
        since = self._due_since
        if since is None or self._waiting:
            return
        loop = asyncio.get_running_loop()
        over_at = since + self._gate.quiet_s
        if loop.time() < over_at:
            self._quiet = loop.call_at(over_at, self._look)
            return
        self._quiet_over()

    def _quiet_over(self) -> None:
        self._due_since = None
        self._waiting = True
        self._gate.wait(self, self._wake)
