"""Does Envoy 1.40 take an EDS cluster's endpoints from LEDS, and what does a change cost?

Issue 17 asks for at most 5,000 bytes per stream when one endpoint's weight changes in a
300-endpoint cluster. In EDS a ClusterLoadAssignment is all-or-nothing: one endpoint's new
weight resends the whole assignment (every endpoint) to every subscribed Envoy. LEDS
(Locality Endpoint Discovery Service) names each endpoint as its own resource
(`xdstp://.../envoy.config.endpoint.v3.LbEndpoint/<collection>/<endpoint>`) inside a glob
collection a locality refers to, so delta xDS could send the one endpoint that changed.

This probe answers with a real Envoy, before heliostat's xDS server learns glob collections:
a minimal delta ADS server (grpc.aio, here) serves one EDS cluster whose locality points at
an LEDS collection, over ADS (`leds_config: {ads: {}}`) or, with `--leds-source grpc`, over
the separate LEDS service on the same port. It then changes one endpoint's weight and
reports whether Envoy subscribed, ACKed, showed every host and the new weight in /clusters,
and the bytes of the change on the wire against the full assignment's.

    .venv/bin/python bench/measure/leds_probe.py [--endpoints 300] [--leds-source ads|grpc]

With `--shared N`, N clusters' assignments name the one same collection (heliostat shares a
collection among the clusters whose localities hold the same endpoints), and a last cluster
gets its assignment only once the others have every host: Envoy then adds a second watch on
a collection it already subscribes to, asks for nothing, and the probe reports whether that
cluster fills by itself, and whether it does once the collection's members are sent again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import leds_pb2_grpc
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

CLUSTER = "probe"
EDS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LEDS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LATE = "probe-late"  # with --shared: a cluster whose assignment comes last
PREFIX = f"xdstp://heliostat/envoy.config.endpoint.v3.LbEndpoint/{CLUSTER}/us-east/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def lb_endpoint(index: int, weight: int) -> endpoint_components_pb2.LbEndpoint:
    why = struct_pb2.Struct()
    why.update({"why": "ok"})
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=f"10.0.{index // 250}.{index % 250 + 1}", port_value=8000
                )
            )
        ),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=weight),
    )
    endpoint.metadata.filter_metadata["heliostat"].CopyFrom(why)
    return endpoint


class Probe:
    """What the server saw, and the endpoints it serves."""

    def __init__(self, endpoints: int, source: str, shared: int = 1) -> None:
        self.weights = dict.fromkeys(range(endpoints), 100)
        self.source = source
        # Clusters whose assignment names the collection; the late one is answered on `late`.
        self.clusters = [CLUSTER] + [f"{CLUSTER}-{i}" for i in range(1, shared)]
        self.late = asyncio.Event()
        self.tasks: list[asyncio.Future[None]] = []
        if shared > 1:
            self.clusters.append(LATE)
        self.requests: list[dict[str, Any]] = []
        self.leds_queues: list[asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse]] = []
        self.version = 1

    def assignment(self, cluster: str = CLUSTER) -> endpoint_pb2.ClusterLoadAssignment:
        leds_config = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
        if self.source == "ads":
            leds_config.ads.SetInParent()
        else:
            api = leds_config.api_config_source
            api.api_type = config_source_pb2.ApiConfigSource.DELTA_GRPC
            api.transport_api_version = config_source_pb2.V3
            api.grpc_services.add().envoy_grpc.cluster_name = "xds"
        locality = endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region="us-east"),
            leds_cluster_locality_config=endpoint_components_pb2.LedsClusterLocalityConfig(
                leds_config=leds_config, leds_collection_name=PREFIX + "*"
            ),
        )
        return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster, endpoints=[locality])

    def full_eds_bytes(self) -> int:
        """The same cluster as plain EDS: every endpoint inline."""
        locality = endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region="us-east"),
            lb_endpoints=[lb_endpoint(i, w) for i, w in self.weights.items()],
        )
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=CLUSTER, endpoints=[locality])
        return len(self._response(EDS_TYPE, {CLUSTER: cla}).SerializeToString())

    def leds_response(self, indexes: list[int]) -> discovery_pb2.DeltaDiscoveryResponse:
        return self._response(
            LEDS_TYPE, {f"{PREFIX}ep{i}": lb_endpoint(i, self.weights[i]) for i in indexes}
        )

    def _response(
        self, type_url: str, resources: dict[str, Any]
    ) -> discovery_pb2.DeltaDiscoveryResponse:
        self.version += 1
        response = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=str(self.version), nonce=str(self.version)
        )
        for name, message in resources.items():
            packed = any_pb2.Any()
            packed.Pack(message)
            response.resources.add(name=name, version=str(self.version), resource=packed)
        return response

    async def stream(
        self, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """One delta stream (ADS, or the LEDS service): answer subscriptions, push changes."""
        out: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()
        self.leds_queues.append(out)

        async def read() -> None:
            async for request in requests:
                self.requests.append(
                    {
                        "type": request.type_url.rsplit(".", 1)[-1],
                        "subscribe": list(request.resource_names_subscribe),
                        "nonce": request.response_nonce,
                        "error": request.error_detail.message or None,
                        "at": time.monotonic(),
                    }
                )
                if request.type_url == EDS_TYPE:
                    wanted = [c for c in request.resource_names_subscribe if c in self.clusters]
                    now = {c: self.assignment(c) for c in wanted if c != LATE}
                    if now:
                        await out.put(self._response(EDS_TYPE, now))
                    if LATE in wanted:
                        self.tasks.append(asyncio.ensure_future(self._answer_late(out)))
                if request.type_url == LEDS_TYPE and request.resource_names_subscribe:
                    await out.put(self.leds_response(list(self.weights)))

        reader = asyncio.ensure_future(read())
        try:
            while True:
                yield await out.get()
        finally:
            reader.cancel()

    async def _answer_late(self, out: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse]) -> None:
        await self.late.wait()
        await out.put(self._response(EDS_TYPE, {LATE: self.assignment(LATE)}))


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def DeltaAggregatedResources(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self.probe.stream(request_iterator):
            yield response


class _Leds(leds_pb2_grpc.LocalityEndpointDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def DeltaLocalityEndpoints(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self.probe.stream(request_iterator):
            yield response


def bootstrap(xds_port: int, admin_port: int, clusters: list[str]) -> dict[str, Any]:
    return {
        "node": {"id": "leds-probe", "cluster": "probe", "locality": {"region": "us-east"}},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            }
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": HTTP_OPTIONS,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                },
            ]
            + [
                {
                    "name": name,
                    "type": "EDS",
                    "connect_timeout": "1s",
                    "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
                }
                for name in clusters
            ]
        },
    }


def hosts(admin_port: int, name: str = CLUSTER) -> dict[str, int]:
    """A probe cluster's hosts in Envoy's /clusters: address -> weight."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters?format=json") as r:
        data = json.load(r)
    for cluster in data.get("cluster_statuses", []):
        if cluster["name"] == name:
            return {
                f"{h['address']['socket_address']['address']}": int(h.get("weight", 0))
                for h in cluster.get("host_statuses", [])
            }
    return {}


async def wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return False


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=300)
    parser.add_argument("--leds-source", choices=["ads", "grpc"], default="ads")
    parser.add_argument(
        "--envoy", default=str(Path(__file__).resolve().parents[2] / ".venv/bin/envoy")
    )
    parser.add_argument("--shared", type=int, default=1, help="clusters naming the collection")
    args = parser.parse_args()
    probe = Probe(args.endpoints, args.leds_source, args.shared)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(probe), server)
    leds_pb2_grpc.add_LocalityEndpointDiscoveryServiceServicer_to_server(_Leds(probe), server)
    xds_port, admin_port = free_port(), free_port()
    server.add_insecure_port(f"127.0.0.1:{xds_port}")
    await server.start()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "envoy.json"
        config.write_text(json.dumps(bootstrap(xds_port, admin_port, probe.clusters)))
        log = Path(tmp) / "envoy.log"
        with log.open("w") as sink:
            envoy = subprocess.Popen(
                [args.envoy, "-c", str(config), "--disable-hot-restart", "-l", "info"],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        result: dict[str, Any] = {"endpoints": args.endpoints, "leds_source": args.leds_source}
        try:
            all_in = await wait_for(lambda: len(hosts(admin_port)) == args.endpoints, 15)
            result["all_hosts_in_clusters"] = all_in
            result["hosts_seen"] = len(hosts(admin_port)) if all_in else None
            if args.shared > 1:
                await _shared(probe, admin_port, args.endpoints, result)
            changed = 7
            probe.weights[changed] = 37
            update = probe.leds_response([changed])
            result["change_bytes_leds"] = len(update.SerializeToString())
            result["change_bytes_eds"] = probe.full_eds_bytes()
            for queue in probe.leds_queues:
                await queue.put(update)
            address = f"10.0.0.{changed + 1}"
            result["new_weight_in_clusters"] = await wait_for(
                lambda: all(hosts(admin_port, c).get(address) == 37 for c in probe.clusters), 10
            )
        finally:
            envoy.terminate()
            envoy.wait(timeout=10)
            await server.stop(None)
        result["requests"] = [
            {k: v for k, v in r.items() if k != "at"} | {"subscribe": r["subscribe"][:2]}
            for r in probe.requests
        ]
        result["envoy_log_leds"] = [
            line.strip()[-240:]
            for line in log.read_text().splitlines()
            if "leds" in line.lower() or "xdstp" in line.lower() or "error" in line.lower()
        ][:20]
    print(json.dumps(result, indent=2))


async def _shared(probe: Probe, admin_port: int, endpoints: int, result: dict[str, Any]) -> None:
    """Every cluster naming the collection has every host; then the late cluster's."""
    early = probe.clusters[:-1]
    result["shared_all_hosts"] = await wait_for(
        lambda: all(len(hosts(admin_port, c)) == endpoints for c in early), 15
    )
    asked = len(probe.requests)
    probe.late.set()
    result["late_filled_alone"] = await wait_for(
        lambda: len(hosts(admin_port, LATE)) == endpoints, 5
    )
    result["late_requests"] = [
        {"type": r["type"], "subscribe": r["subscribe"][:2], "nonce": r["nonce"]}
        for r in probe.requests[asked:]
    ]
    if not result["late_filled_alone"]:
        again = probe.leds_response(list(probe.weights))  # the members, sent again
        for queue in probe.leds_queues:
            await queue.put(again)
        result["late_filled_after_resend"] = await wait_for(
            lambda: len(hosts(admin_port, LATE)) == endpoints, 10
        )
    result["early_hosts_after"] = [len(hosts(admin_port, c)) for c in early]


if __name__ == "__main__":
    asyncio.run(main())
