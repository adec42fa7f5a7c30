"""Gateway load reports (LRS) -> demand per model and origin region; the bootstrap that asks."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2
from google.protobuf import duration_pb2

from heliostat.balance.demand import stepped
from heliostat.bootstrap import XDS_CLUSTER, BootstrapOptions, bootstrap
from heliostat.xds.grpc.load_reports import LoadReports, cluster_model
from heliostat.xds.resources.nodes import Role

MODELS = ["llama", "small.v2"]


def report(
    cluster: str,
    issued: dict[str, int],
    *,
    dropped: int = 0,
    seconds: float = 1.0,
    served: dict[str, int] | None = None,
) -> lrs_pb2.LoadStatsRequest:
    """One gateway's report: per upstream region, requests issued; per endpoint, completed."""
    stats = load_report_pb2.ClusterStats(
        cluster_name=cluster,
        total_dropped_requests=dropped,
        load_report_interval=duration_pb2.Duration(
            seconds=int(seconds), nanos=int((seconds % 1) * 1e9)
        ),
    )
    for region, count in issued.items():
        locality = stats.upstream_locality_stats.add(
            locality=base_pb2.Locality(region=region), total_issued_requests=count
        )
        for address, done in (served or {}).items():
            host, _, port = address.rpartition(":")
            locality.upstream_endpoint_stats.add(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=host, port_value=int(port))
                ),
                total_successful_requests=done,
            )
    return lrs_pb2.LoadStatsRequest(cluster_stats=[stats])


def test_cluster_names_map_to_their_model_and_class() -> None:
    assert cluster_model("llama", MODELS) == ("llama", False)
    assert cluster_model("llama.batch", MODELS) == ("llama", True)
    assert cluster_model("llama~acme@v1", MODELS) == ("llama", False)
    assert cluster_model("llama.batch~acme@v2", MODELS) == ("llama", True)
    assert cluster_model("small.v2", MODELS) == ("small.v2", False)
    assert cluster_model("small.v2.batch", MODELS) == ("small.v2", True)
    assert cluster_model("heliostat_xds", MODELS) is None
    assert cluster_model("other.batch", MODELS) is None


def test_demand_is_what_the_gateways_issued_and_dropped_per_second_wherever_it_went() -> None:
    book = LoadReports(window=3.0)
    t = 1000.0
    for tick in range(3):  # two gateways of eu-west, one of ap-southeast, 1 s reports
        now = t + tick
        book.ingest(
            "gw-eu-1", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 8, "us-east": 2}), now
        )
        book.ingest(
            "gw-eu-2", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 5}, dropped=1), now
        )
        book.ingest(
            "gw-eu-2",
            "eu-west",
            Role.GATEWAY,
            report("llama.batch", {"eu-west": 3}, dropped=3),
            now,
        )
        book.ingest("gw-ap", "ap-southeast", Role.GATEWAY, report("llama", {"eu-west": 4}), now)
    load = book.load(MODELS, t + 2)
    eu = load.origins[("llama", "eu-west")]
    assert eu.interactive == pytest.approx(8 + 2 + 5 + 1)
    assert eu.batch == pytest.approx(6)
    assert eu.refused == pytest.approx(1 + 3)
    assert eu.gateways == 2 and eu.at == t + 2
    assert load.origins[("llama", "ap-southeast")].total == pytest.approx(4)
    assert ("small.v2", "eu-west") not in load.origins


def test_sidecars_and_nodes_without_a_region_are_not_counted() -> None:
    book = LoadReports()
    book.ingest("sc-1", "eu-west", Role.SIDECAR, report("llama", {"eu-west": 50}), 10.0)
    book.ingest("gw-?", None, Role.GATEWAY, report("llama", {"eu-west": 50}), 10.0)
    assert book.load(MODELS, 10.0).origins == {}
    assert book.ignored == 2


def test_reports_leave_the_window_and_silent_gateways_stop_speaking_for_their_region() -> None:
    book = LoadReports(window=2.0, stale_after=5.0)
    book.ingest("gw", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 10}), 0.0)
    book.ingest("gw", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 2}), 3.0)
    assert book.load(MODELS, 3.0).origins[("llama", "eu-west")].total == pytest.approx(2)
    assert book.load(MODELS, 9.0).origins == {}
    book.ingest("gw", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 2}), 10.0)
    book.forget("gw")
    assert book.load(MODELS, 10.0).origins == {}


def test_answers_per_endpoint_add_up_over_gateways() -> None:
    book = LoadReports()
    served = {"10.0.0.1:8000": 6, "10.0.0.2:8000": 2}
    book.ingest("a", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 8}, served=served), 5.0)
    book.ingest(
        "b",
        "us-east",
        Role.GATEWAY,
        report("llama", {"eu-west": 2}, served={"10.0.0.1:8000": 2}),
        5.0,
    )
    book.load(MODELS, 5.0)
    assert book.served == {("llama", "10.0.0.1:8000"): 8.0, ("llama", "10.0.0.2:8000"): 2.0}


def test_a_quiet_gateway_reports_zero_demand_not_none() -> None:
    book = LoadReports()
    book.ingest("gw", "eu-west", Role.GATEWAY, report("llama", {}), 1.0)
    assert book.load(MODELS, 1.0).origins[("llama", "eu-west")].total == 0.0


def test_the_bootstrap_asks_for_load_reports_over_the_xds_link() -> None:
    document = bootstrap(BootstrapOptions(node_id="gw", region="eu-west"))
    config = document["cluster_manager"]["load_stats_config"]
    assert config["api_type"] == "GRPC" and config["transport_api_version"] == "V3"
    assert config["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
    quiet = bootstrap(BootstrapOptions(node_id="gw", region="eu-west", load_reports=False))
    assert "cluster_manager" not in quiet


def test_the_newest_second_is_reported_beside_the_window_and_a_step_stands_out() -> None:
    """Two quiet seconds at 10/s, then one at 40/s: the window says 20/s, the newest second
    40/s, which stands far beyond the Poisson spread of the window's rate (a step the law
    takes at once, `demand.stepped`). Steady traffic is no step."""
    book = LoadReports(window=3.0, recent=1.0)
    for tick, count in enumerate([10, 10, 40]):
        book.ingest("gw", "eu-west", Role.GATEWAY, report("llama", {"eu-west": count}), tick)
    origin = book.load(MODELS, 2.0).origins[("llama", "eu-west")]
    assert origin.total == pytest.approx(20.0)
    assert origin.recent == pytest.approx(40.0) and origin.recent_s == pytest.approx(1.0)
    assert stepped(origin) == pytest.approx(40.0)
    steady = LoadReports(window=3.0, recent=1.0)
    for tick, count in enumerate([20, 18, 23]):
        steady.ingest("gw", "eu-west", Role.GATEWAY, report("llama", {"eu-west": count}), tick)
    assert stepped(steady.load(MODELS, 2.0).origins[("llama", "eu-west")]) is None


def test_requests_lent_through_an_east_west_hop_count_once_at_their_origin() -> None:
    """With the east-west hop, eu-west's gateways place ap-southeast's lent requests in their
    own model cluster and report them as issued: counted at eu-west too, they would read as
    eu-west's demand and leave it no room. What other regions issued to eu-west's locality
    (its east-west gateways) is taken off eu-west's demand, batch or interactive."""
    book = LoadReports(window=3.0)
    t = 1000.0
    for tick in range(3):
        now = t + tick
        # ap-southeast's gateway: 6 of its own, 4 interactive and 2 batch lent to eu-west.
        book.ingest(
            "gw-ap",
            "ap-southeast",
            Role.GATEWAY,
            report("llama", {"ap-southeast": 6, "eu-west": 4}),
            now,
        )
        book.ingest(
            "gw-ap", "ap-southeast", Role.GATEWAY, report("llama.batch", {"eu-west": 2}), now
        )
        # eu-west's gateway: 10 of its users' and the 6 lent ones, all into its own cluster.
        book.ingest("gw-eu", "eu-west", Role.GATEWAY, report("llama", {"eu-west": 16}), now)
    with_hop = book.load(MODELS, t + 2, ["eu-west"]).origins
    assert with_hop["llama", "eu-west"].interactive == pytest.approx(10.0)
    assert with_hop["llama", "eu-west"].recent == pytest.approx(10.0)
    assert with_hop["llama", "ap-southeast"].interactive == pytest.approx(10.0)
    assert with_hop["llama", "ap-southeast"].batch == pytest.approx(2.0)
    # Without east-west addresses the locality holds eu-west's replicas, placed by the
    # lender itself: eu-west's gateways never saw those requests, nothing is taken off.
    plain = book.load(MODELS, t + 2).origins
    assert plain["llama", "eu-west"].interactive == pytest.approx(16.0)
    described = book.describe(MODELS, t + 2, ["eu-west"])["demand"]
    assert described["llama/eu-west"]["interactive"] == pytest.approx(10.0)  # type: ignore[index]
