"""Make-before-break for listeners: a listener the snapshot drops stays on the node until the
node has accepted every listener of the snapshot.

Listeners are named by their port, so moving the gateway to another port replaces one
listener with another of a new name. Sent together as "the new one, not the old one", Envoy
removes the old listener at once, whatever happens to the new one: when the new port is
taken, Envoy NACKs the new listener and is left serving no port at all (measured with Envoy
1.40: every request refused until the policy was put back). So the streams send the new
listener *alongside* the old one first, and drop the old one only once the node has ACKed
the new; if the node NACKs it, the old one keeps serving.

An old listener on the same address as a current one is not kept: Envoy cannot bind two
listeners to one address, and keeping it would block the new one forever.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.listener.v3 import listener_pb2

from heliostat.xds.resources.snapshot import Resource


def kept_until_replaced(
    current: Mapping[str, Resource],
    accepted: Mapping[str, str],
    known: Mapping[str, Resource],
) -> list[str]:
    """Names of listeners to keep on the node although the snapshot dropped them.

    `current` is what the snapshot offers the node, `accepted` what the node has ACKed (name
    -> version), `known` the last resource sent under every name. Nothing is kept once every
    current listener is accepted at its version: the replacement is serving.
    """
    if all(accepted.get(name) == r.version for name, r in current.items()):
        return []
    taken = {_address(r) for r in current.values()}
    return sorted(
        name
        for name in accepted
        if name not in current and name in known and _address(known[name]) not in taken
    )


def _address(resource: Resource) -> tuple[str, int]:
    message = resource.message
    assert isinstance(message, listener_pb2.Listener)
    socket = message.address.socket_address
    return socket.address, socket.port_value
