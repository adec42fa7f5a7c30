"""The re-implemented endpoint picker: prefix hashing, its LRU index, scoring and choosing.

No sockets: metrics are set by hand, as the scrape loop would set them.
"""

from __future__ import annotations

import random
import time

import pytest

from bench.routing import SCENARIOS, candidate_regions
from bench.routing_picker import (
    HASH_BLOCK_CHARS,
    KV_WEIGHT,
    PICKED_ENDPOINT_HEADER,
    PREFIX_WEIGHT,
    QUEUE_WEIGHT,
    STALE_AFTER_S,
    Candidate,
    Metrics,
    Picker,
    PrefixIndex,
    block_hashes,
    choose,
    prompt_text,
    saturated,
    scores,
)
from bench.scenario import load_scenario
from heliostat.sim.loadgen import Shot

NOW = 1000.0
CHAT = load_scenario(SCENARIOS / "chat.yaml")


def fresh(waiting: float = 0.0, kv: float = 0.0) -> Metrics:
    return Metrics(waiting=waiting, kv_usage=kv, at=NOW)


def test_block_hashes_are_equal_exactly_as_far_as_the_texts_share_whole_blocks() -> None:
    shared = "s" * (3 * HASH_BLOCK_CHARS + 10)
    a = block_hashes(shared + "a" * 200)
    b = block_hashes(shared + "b" * 200)
    assert a[:3] == b[:3]
    assert a[3] != b[3]  # the fourth block holds the first differing character
    assert all(x != y for x, y in zip(a[3:], b[3:], strict=False))


def test_block_hashes_cover_full_blocks_only_and_at_most_max_blocks() -> None:
    assert block_hashes("x" * (HASH_BLOCK_CHARS - 1)) == []
    assert len(block_hashes("x" * (2 * HASH_BLOCK_CHARS + 5))) == 2
    assert len(block_hashes("x" * 10_000, max_blocks=7)) == 7


def test_prompt_text_reads_completions_prompts_and_chat_messages_in_order() -> None:
    assert prompt_text({"prompt": "hello"}) == "hello"
    chat = {"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}]}
    assert prompt_text(chat).index("rules") < prompt_text(chat).index("q")
    assert prompt_text({"prompt": [1, 2, 3]}) == ""


def test_prefix_index_matches_from_the_start_and_stops_at_the_first_miss() -> None:
    index = PrefixIndex(capacity_per_endpoint=100)
    index.record("a", [1, 2, 3])
    assert index.matched("a", [1, 2, 3, 4]) == 3
    assert index.matched("a", [1, 9, 3]) == 1
    assert index.matched("a", [9, 1, 2]) == 0
    assert index.matched("b", [1, 2, 3]) == 0


def test_prefix_index_evicts_least_recently_routed_blocks_per_endpoint() -> None:
    index = PrefixIndex(capacity_per_endpoint=4)
    index.record("a", [1, 2])
    index.record("a", [3, 4])
    index.record("a", [1, 2])  # 1 and 2 are the most recent again
    index.record("a", [5, 6])  # evicts 3 and 4, the least recent
    assert index.size("a") == 4
    assert index.matched("a", [1, 2]) == 2
    assert index.matched("a", [3]) == 0
    index.record("b", [7, 8, 9])  # another endpoint has its own budget
    assert index.size("a") == 4 and index.size("b") == 3


def test_prefix_index_refuses_a_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PrefixIndex(0)


CANDIDATES = [
    Candidate("a", "here", 0.0),
    Candidate("b", "here", 0.0),
    Candidate("c", "there", 80.0),
]


def test_queue_score_is_min_max_normalised_over_the_candidates() -> None:
    metrics = {"a": fresh(waiting=0), "b": fresh(waiting=2), "c": fresh(waiting=4)}
    scored = scores(CANDIDATES, metrics, {}, NOW)
    kv_part = KV_WEIGHT * 1.0
    assert scored["a"] == pytest.approx(QUEUE_WEIGHT * 1.0 + kv_part)
    assert scored["b"] == pytest.approx(QUEUE_WEIGHT * 0.5 + kv_part)
    assert scored["c"] == pytest.approx(QUEUE_WEIGHT * 0.0 + kv_part)


def test_equal_queues_all_score_one_and_kv_use_lowers_the_score() -> None:
    metrics = {"a": fresh(waiting=3, kv=0.5), "b": fresh(waiting=3, kv=0.0), "c": fresh(3, 0.25)}
    scored = scores(CANDIDATES, metrics, {}, NOW)
    assert scored["a"] == pytest.approx(QUEUE_WEIGHT + KV_WEIGHT * 0.5)
    assert scored["b"] == pytest.approx(QUEUE_WEIGHT + KV_WEIGHT)
    assert scored["c"] == pytest.approx(QUEUE_WEIGHT + KV_WEIGHT * 0.75)


def test_prefix_share_weighs_three() -> None:
    metrics = {name: fresh() for name in "abc"}
    scored = scores(CANDIDATES, metrics, {"b": 0.5}, NOW)
    assert scored["b"] - scored["a"] == pytest.approx(PREFIX_WEIGHT * 0.5)


def test_stale_or_missing_metrics_score_as_a_full_replica() -> None:
    metrics = {
        "a": Metrics(waiting=0, kv_usage=0, at=NOW - STALE_AFTER_S - 0.01),
        "b": fresh(waiting=1, kv=0.5),
        "c": None,
    }
    scored = scores(CANDIDATES, metrics, {"a": 1.0}, NOW)
    assert scored["a"] == pytest.approx(PREFIX_WEIGHT)  # only its prefix score is left
    assert scored["c"] == 0.0
    # b is the only fresh one: the queue normalisation ignores the stale ones
    assert scored["b"] == pytest.approx(QUEUE_WEIGHT + KV_WEIGHT * 0.5)


def test_saturation_detector() -> None:
    assert not saturated(fresh(waiting=4, kv=0.79), NOW)
    assert saturated(fresh(waiting=5), NOW)
    assert saturated(fresh(kv=0.8), NOW)
    assert saturated(None, NOW)
    assert saturated(Metrics(0, 0, NOW - 1.0), NOW)


def test_choose_takes_the_best_and_breaks_ties_towards_the_nearer_region() -> None:
    rng = random.Random(0)
    assert choose(CANDIDATES, {"a": 1.0, "b": 2.0, "c": 3.0}, rng) == "c"
    picks = {choose(CANDIDATES, {"a": 2.0, "b": 2.0, "c": 2.0}, rng) for _ in range(50)}
    assert picks == {"a", "b"}  # never the remote one on a tie, both near ones in turn


def picker() -> Picker:
    endpoints = {
        "127.0.0.1:1": "us-east",
        "127.0.0.1:2": "us-east",
        "127.0.0.1:3": "eu-west",
        "127.0.0.1:4": "ap-southeast",
    }
    made = Picker(endpoints, CHAT.within_budget, CHAT.rtt_ms, model="m", lru_blocks=1000)
    now = time.monotonic()
    for address in endpoints:
        made.metrics[address] = Metrics(waiting=0, kv_usage=0, at=now)
    return made


def test_candidates_are_the_own_region_and_regions_within_the_network_budget() -> None:
    p = picker()
    # ap-southeast may use eu-west (160 ms) but not us-east (210 ms): with both allowed
    # replicas busy and us-east idle, a us-east pick could only come from a wrong candidate set
    p.metrics["127.0.0.1:4"] = Metrics(waiting=4, kv_usage=0.9, at=time.monotonic())
    p.metrics["127.0.0.1:3"] = Metrics(waiting=4, kv_usage=0.9, at=time.monotonic())
    chosen = {p.pick({"prompt": f"q{i}"}, "ap-southeast") for i in range(20)}
    assert chosen <= {"127.0.0.1:3", "127.0.0.1:4"}


def test_an_idle_fleet_keeps_requests_in_their_region() -> None:
    p = picker()
    for i in range(30):
        assert p.pick({"prompt": f"question {i}"}, "eu-west") == "127.0.0.1:3"


def test_a_shared_prefix_follows_the_endpoint_it_was_routed_to() -> None:
    p = picker()
    system = "system prompt " * 100
    first = p.pick({"prompt": system + "first"}, "us-east")
    for i in range(10):
        assert p.pick({"prompt": system + f"user {i}"}, "us-east") == first


def test_a_shorter_queue_elsewhere_wins_over_a_busy_own_region() -> None:
    p = picker()
    busy = Metrics(waiting=3, kv_usage=0.6, at=time.monotonic())
    p.metrics["127.0.0.1:1"] = busy
    p.metrics["127.0.0.1:2"] = busy
    assert p.pick({"prompt": "hello"}, "us-east") == "127.0.0.1:3"


def test_prepare_names_the_endpoint_in_a_header_and_counts_the_decision() -> None:
    p = picker()
    shot = Shot(
        0.5, "http://127.0.0.1:9/v1/completions", {"x-model": "m"}, {"prompt": "hi"}, "us-east"
    )
    sent = p.prepare(shot)
    assert sent.headers[PICKED_ENDPOINT_HEADER] in {"127.0.0.1:1", "127.0.0.1:2"}
    assert sent.headers["x-model"] == "m"
    assert (sent.at, sent.url, sent.body, sent.label) == (shot.at, shot.url, shot.body, shot.label)
    stats = p.describe_stats()
    assert stats["decisions"] == 1
    assert stats["decision_ms_mean"] >= 0.0


def test_an_edge_regions_users_are_picked_for_within_their_budget() -> None:
    edge = load_scenario(SCENARIOS / "edge_pop.yaml")
    endpoints = {"127.0.0.1:1": "us-east", "127.0.0.1:3": "eu-west", "127.0.0.1:4": "ap-southeast"}
    p = Picker(
        endpoints,
        lambda origin: candidate_regions(edge, origin),
        edge.rtt_ms,
        model="m",
        lru_blocks=1000,
        origins=list(edge.regions),
    )
    now = time.monotonic()
    p.metrics["127.0.0.1:1"] = Metrics(waiting=4, kv_usage=0.9, at=now)  # busy, yet the only one
    for address in ("127.0.0.1:3", "127.0.0.1:4"):
        p.metrics[address] = Metrics(waiting=0, kv_usage=0, at=now)
    assert candidate_regions(edge, "sa-east") == ["us-east"]  # eu-west is 190 ms away
    assert {p.pick({"prompt": f"q{i}"}, "sa-east") for i in range(10)} == {"127.0.0.1:1"}
