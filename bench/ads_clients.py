"""Many simulated gateways on ADS, in a process of their own (the fanout benchmark's load).

    python -m bench.ads_clients --xds 127.0.0.1:18000 --clients 1000 --mode sotw \\
        --regions us-east,eu-west,ap-southeast

Each client is one ADS stream with its own node (id, `locality.region`, metadata role
gateway: the identity `heliostat bootstrap` gives an Envoy), and subscribes as an Envoy
does: CDS and LDS as wildcards, then EDS for the clusters and RDS for the listener's route
configuration it was sent, ACKing every response. Streams share a few gRPC channels (each
its own connection). Responses are read as raw bytes, so their exact size on the wire is
known, and every receipt is stamped with `time.time()`, the clock the parent process uses
for the moment it made a change (one machine, one system clock).

The parent drives it with one command per line on stdin; every answer is one JSON line on
stdout:

    status               -> {"event": "status", "ready", "failed", "responses", "last_response_at"}
    await T0 TIMEOUT     -> {"event": "acked", "acked", "missing"}: waits until every client
                            has ACKed an EDS response received after T0, or TIMEOUT seconds
    report T0 T1         -> {"event": "report", "clients": [[node, region, eds_ack_at|null,
                            bytes, responses], ...]}: what each client got in [T0, T1]
    quit                 -> closes the streams and exits

The first line it prints is {"event": "ready", ...} once every client holds a full
configuration, or {"event": "error", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LEDS = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint"
ALL_TYPES = (CDS, EDS, LDS, RDS)
ENDPOINT_TYPES = (EDS, LEDS)  # an endpoint's change arrives as either
_HCM = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(slots=True)
class Receipt:
    """One response as the client saw it."""

    type_url: str
    received_at: float
    size: int
    acked_at: float = 0.0


@dataclass
class Client:
    node_id: str
    region: str
    receipts: list[Receipt] = field(default_factory=list)
    acked_types: set[str] = field(default_factory=set)
    error: str | None = None
    needs_leds: bool = False  # subscribed to LEDS collections: ready once they are ACKed
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def node(self) -> base_pb2.Node:
        metadata = struct_pb2.Struct()
        metadata.update({"role": "gateway"})
        return base_pb2.Node(
            id=self.node_id,
            cluster="heliostat-gateway",
            locality=base_pb2.Locality(region=self.region),
            metadata=metadata,
        )

    def acknowledged(self, receipt: Receipt, type_url: str) -> None:
        receipt.acked_at = time.time()
        self.acked_types.add(type_url)
        if self.acked_types.issuperset(ALL_TYPES) and (
            not self.needs_leds or LEDS in self.acked_types
        ):
            self.ready.set()


# -- what an Envoy asks for after a response ---------------------------------------------------


def eds_names(resources: Iterable[bytes]) -> set[str]:
    names = set()
    for value in resources:
        cluster = cluster_pb2.Cluster.FromString(value)
        if cluster.type == cluster_pb2.Cluster.EDS:
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return names


def rds_names(resources: Iterable[bytes]) -> set[str]:
    names = set()
    for value in resources:
        listener = listener_pb2.Listener.FromString(value)
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url == _HCM:
                    manager = hcm_pb2.HttpConnectionManager.FromString(
                        network_filter.typed_config.value
                    )
                    if manager.HasField("rds"):
                        names.add(manager.rds.route_config_name)
    return names


def leds_names(resources: Iterable[bytes]) -> set[str]:
    """The LEDS collections (globs) the assignments' localities name, as Envoy subscribes."""
    names = set()
    for value in resources:
        assignment = endpoint_pb2.ClusterLoadAssignment.FromString(value)
        for locality in assignment.endpoints:
            if locality.HasField("leds_cluster_locality_config"):
                names.add(locality.leds_cluster_locality_config.leds_collection_name)
    return names


_DEPENDENT = {CDS: (EDS, eds_names), LDS: (RDS, rds_names)}
# Delta only: SotW cannot name a glob collection, so heliostat sends SotW plain EDS.
_DELTA_DEPENDENT = {**_DEPENDENT, EDS: (LEDS, leds_names)}


class SotwSession:
    """State of the World: every request names the full subscription of its type."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.versions: dict[str, str] = {}
        self.nonces: dict[str, str] = {}
        self.names: dict[str, set[str]] = {CDS: set(), LDS: set()}

    def opening(self) -> list[bytes]:
        first = discovery_pb2.DiscoveryRequest(type_url=CDS, node=self.client.node())
        return [first.SerializeToString(), self._request(LDS)]

    def _request(self, type_url: str) -> bytes:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self.versions.get(type_url, ""),
            response_nonce=self.nonces.get(type_url, ""),
            resource_names=sorted(self.names.get(type_url, ())),
        )
        return bytes(request.SerializeToString())

    def on_response(self, raw: bytes) -> tuple[str, list[bytes]]:
        response = discovery_pb2.DiscoveryResponse.FromString(raw)
        type_url = response.type_url
        requests = []
        if type_url in _DEPENDENT:
            dependent, names_of = _DEPENDENT[type_url]
            wanted = names_of(r.value for r in response.resources)
            if wanted != self.names.get(dependent):
                self.names[dependent] = wanted
                requests.append(self._request(dependent))
        self.versions[type_url] = response.version_info
        self.nonces[type_url] = response.nonce
        requests.append(self._request(type_url))  # the ACK
        return type_url, requests


class DeltaSession:
    """Incremental: requests carry only what changes in the subscription, and nonces.

    What a held resource asks for (a cluster's assignment, an assignment's collections) is
    worked out when it arrives, not again for every resource held on every response: an
    Envoy decodes what it is sent, and re-decoding all 31 KB of held assignments on each
    EDS response cost this client process ~0.12 ms per stream per push (120 ms of client
    time per push at 1,000 streams), which the ACK latency then counted as heliostat's.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        # Per type, per resource held: the names of the dependent type it asks for.
        self.asks: dict[str, dict[str, set[str]]] = {CDS: {}, LDS: {}, EDS: {}}
        self.subscribed: dict[str, set[str]] = {EDS: set(), RDS: set(), LEDS: set()}

    def opening(self) -> list[bytes]:
        first = discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, node=self.client.node())
        return [
            first.SerializeToString(),
            discovery_pb2.DeltaDiscoveryRequest(type_url=LDS).SerializeToString(),
        ]

    def on_response(self, raw: bytes) -> tuple[str, list[bytes]]:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        type_url = response.type_url
        requests = []
        if type_url in _DELTA_DEPENDENT:
            dependent, names_of = _DELTA_DEPENDENT[type_url]
            asks = self.asks[type_url]
            for resource in response.resources:
                asks[resource.name] = names_of([resource.resource.value])
            for name in response.removed_resources:
                asks.pop(name, None)
            wanted = set().union(*asks.values())
            current = self.subscribed[dependent]
            if wanted != current:
                requests.append(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=dependent,
                        resource_names_subscribe=sorted(wanted - current),
                        resource_names_unsubscribe=sorted(current - wanted),
                    ).SerializeToString()
                )
                self.subscribed[dependent] = wanted
                self.client.needs_leds = self.client.needs_leds or bool(self.subscribed[LEDS])
        ack = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        requests.append(ack.SerializeToString())
        return type_url, requests


async def run_client(client: Client, channel: grpc.aio.Channel, mode: str) -> None:
    method = "DeltaAggregatedResources" if mode == "delta" else "StreamAggregatedResources"
    session: SotwSession | DeltaSession = (
        DeltaSession(client) if mode == "delta" else SotwSession(client)
    )
    open_stream = channel.stream_stream(
        _SERVICE + method, request_serializer=_identity, response_deserializer=_identity
    )
    # No request iterator: requests go out with call.write(), so an ACK's timestamp is
    # taken once it is handed to the transport (grpc-stubs wrongly make the iterator required).
    call = open_stream(wait_for_ready=True)  # type: ignore[call-arg]
    try:
        for request in session.opening():
            await call.write(request)
        while True:
            raw = await call.read()
            if not isinstance(raw, bytes):  # grpc.aio.EOF: the server ended the stream
                client.error = client.error or "stream closed by the server"
                return
            receipt = Receipt("", time.time(), len(raw))
            type_url, requests = session.on_response(raw)
            receipt.type_url = type_url
            client.receipts.append(receipt)
            for request in requests:
                await call.write(request)
            client.acknowledged(receipt, type_url)
    except asyncio.CancelledError:
        call.cancel()
        raise
    except grpc.aio.AioRpcError as exc:
        client.error = f"{exc.code().name}: {exc.details()}"
        if "from Core" in (exc.details() or ""):
            # grpc.aio's word for a write on a stream that had already ended: the status
            # the stream ended with is lost. Seen when the server's gRPC cancelled streams
            # it had queued and not handed to heliostat yet (heliostat.xds.grpc.server).
            client.error += " (the stream ended before this write; never served?)"


def _identity(value: bytes) -> bytes:
    return value


# -- the command loop --------------------------------------------------------------------------


def status(clients: list[Client]) -> dict[str, Any]:
    receipts = [r.received_at for c in clients for r in c.receipts]
    return {
        "event": "status",
        "ready": sum(1 for c in clients if c.ready.is_set()),
        "failed": sum(1 for c in clients if c.error),
        "errors": sorted({c.error for c in clients if c.error})[:3],
        "responses": len(receipts),
        "last_response_at": max(receipts, default=0.0),
    }


def _eds_ack_after(client: Client, t0: float) -> float | None:
    """When the client ACKed its first endpoint response received at or after t0. Receipts
    are in the order received, so only those since t0 are looked at (from the end). With
    LEDS that is the LbEndpoint response: the assignment goes just before it under a pending
    version (heliostat.xds.protocol.held) and carries no endpoint."""
    receipts = client.receipts
    first = len(receipts)
    while first and receipts[first - 1].received_at >= t0:
        first -= 1
    types = (LEDS,) if client.needs_leds else ENDPOINT_TYPES
    for receipt in receipts[first:]:
        if receipt.type_url in types and receipt.acked_at:
            return receipt.acked_at
    return None


async def await_acks(clients: list[Client], t0: float, timeout: float) -> dict[str, Any]:
    """Polls only the clients still missing: this runs on the loop that ACKs, and walking
    every client's receipts every 5 ms took a sixth of this process's time while a change
    reached 1,000 streams, delaying the very ACKs being measured."""
    deadline = time.monotonic() + timeout
    missing = list(clients)
    while True:
        missing = [c for c in missing if _eds_ack_after(c, t0) is None]
        if not missing or time.monotonic() > deadline:
            return {
                "event": "acked",
                "acked": len(clients) - len(missing),
                "missing": [c.node_id for c in missing[:10]],
            }
        await asyncio.sleep(0.005)


def report(clients: list[Client], t0: float, t1: float) -> dict[str, Any]:
    rows = []
    for client in clients:
        window = [r for r in client.receipts if t0 <= r.received_at <= t1]
        rows.append(
            [
                client.node_id,
                client.region,
                _eds_ack_after(client, t0),
                sum(r.size for r in window),
                len(window),
            ]
        )
    return {"event": "report", "clients": rows}


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve_commands(clients: list[Client], read_line: Callable[[], Any]) -> None:
    while True:
        line = await read_line()
        words = line.split()
        if not words or words[0] == "quit":
            return
        command, args = words[0], [float(w) for w in words[1:]]
        if command == "status":
            say(status(clients))
        elif command == "await" and len(args) == 2:
            say(await await_acks(clients, args[0], args[1]))
        elif command == "report" and len(args) == 2:
            say(report(clients, args[0], args[1]))
        else:
            say({"event": "error", "error": f"unknown command {line.strip()!r}"})


async def main_async(options: argparse.Namespace) -> int:
    regions = [r for r in options.regions.split(",") if r]
    per_channel = max(1, options.streams_per_channel)
    channel_count = (options.clients + per_channel - 1) // per_channel
    channel_options = [
        ("grpc.use_local_subchannel_pool", 1),  # one connection per channel, not one shared
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ]
    channels = [
        grpc.aio.insecure_channel(options.xds, options=channel_options)
        for _ in range(channel_count)
    ]
    clients = [
        Client(f"{options.prefix}-{regions[i % len(regions)]}-{i}", regions[i % len(regions)])
        for i in range(options.clients)
    ]
    tasks = [
        asyncio.create_task(run_client(c, channels[i // per_channel], options.mode))
        for i, c in enumerate(clients)
    ]
    loop = asyncio.get_running_loop()
    try:
        began = time.monotonic()
        deadline = began + options.connect_timeout
        while not all(c.ready.is_set() for c in clients):
            failed = [c for c in clients if c.error]
            if failed or time.monotonic() > deadline:
                say(
                    {
                        **status(clients),
                        "event": "error",
                        "error": failed[0].error if failed else "timed out subscribing",
                    }
                )
                return 1
            await asyncio.sleep(0.02)
        say(
            {
                "event": "ready",
                "clients": len(clients),
                "channels": len(channels),
                "seconds": round(time.monotonic() - began, 3),
            }
        )
        await serve_commands(clients, lambda: loop.run_in_executor(None, sys.stdin.readline))
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ads_clients", description=__doc__)
    parser.add_argument("--xds", required=True, help="HOST:PORT of heliostat's xDS server")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--mode", choices=("sotw", "delta"), required=True)
    parser.add_argument("--regions", required=True, help="comma-separated; clients round-robin")
    parser.add_argument("--streams-per-channel", type=int, default=50)
    parser.add_argument("--prefix", default="bench-gw")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
