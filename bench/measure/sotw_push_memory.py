"""Where serve's memory peak during a SotW push to 1,000 streams comes from.

fanout.json shows serve's RSS rising by far more during one push than with every stream
subscribed and idle. This script rebuilds that push in-process, without gRPC: the fanout
policy (300 endpoints, 3 regions), one gateway group's snapshot, and N SotW streams
(`heliostat.xds.protocol.sotw`) each asked for every ClusterLoadAssignment, holding what
each stream hands to gRPC at once, as the streams of one push do while gRPC writes:

- `message`: the DiscoveryResponse each stream builds (its resources copied into it);
- `serialized`: that, plus the bytes gRPC serializes from it for the wire.

It reports the RSS growth next to what tracemalloc sees. tracemalloc sees only Python's
allocator, and protobuf (upb) builds messages in its own arenas: the per-stream copies show
in RSS and not in tracemalloc, which is why a tracemalloc snapshot of serve points nowhere.

    .venv/bin/python bench/measure/sotw_push_memory.py [--streams 1000] [--hold message|serialized]
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
from pathlib import Path

from envoy.service.discovery.v3 import discovery_pb2

from bench.scale import _policy
from heliostat.balance import static_views
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.protocol.sotw import SotwStream
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.types import TypeUrl


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--hold", choices=["message", "serialized"], default="serialized")
    args = parser.parse_args()
    policy = _policy(300, 3)
    publisher = Publisher(SnapshotCache(), Inputs(policy, static_views(policy)))
    group = NodeGroup(Role.GATEWAY, sorted(policy.spec.regions)[0])
    snapshot = publisher.snapshot_for(group, "gw")
    assignments = snapshot.resources(TypeUrl.ENDPOINT)
    request = discovery_pb2.DiscoveryRequest(
        type_url=TypeUrl.ENDPOINT.value, resource_names=list(assignments)
    )
    tracemalloc.start()
    gc.collect()
    before = rss_mb()
    held: list[object] = []
    for index in range(args.streams):
        stream = SotwStream(f"gw-{index}")
        stream.on_snapshot(snapshot)
        for response in stream.on_request(request).responses:
            held.append(response)
            if args.hold == "serialized":
                held.append(response.SerializeToString())
    traced, _ = tracemalloc.get_traced_memory()
    print(
        json.dumps(
            {
                "streams": args.streams,
                "hold": args.hold,
                "eds_bytes_per_response": sum(len(r.packed.value) for r in assignments.values()),
                "rss_growth_mb": round(rss_mb() - before, 1),
                "tracemalloc_mb": round(traced / 2**20, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
