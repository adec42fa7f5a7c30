"""The OpenAI-compatible HTTP API, metrics, identity headers, RTT emulation and /sim routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from heliostat.sim import Fleet

from .conftest import FleetFactory


def url(fleet: Fleet, path: str, index: int = 0) -> str:
    return list(fleet)[index].url + path


async def post(
    http: aiohttp.ClientSession, target: str, body: dict[str, Any], **headers: str
) -> tuple[int, dict[str, str], Any]:
    async with http.post(target, json=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def sse_events(resp: aiohttp.ClientResponse) -> list[str]:
    """The ``data:`` payloads of an SSE stream, in order."""
    raw = (await resp.read()).decode()
    events = [block for block in raw.split("\n\n") if block]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


async def test_completion(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet({"region": "us-east", "model": "llama-70b"})
    status, headers, body = await post(
        http,
        url(fleet, "/v1/completions"),
        {"model": "llama-70b", "prompt": "x" * 400, "max_tokens": 7},
    )
    assert status == 200
    assert body["object"] == "text_completion"
    assert body["model"] == "llama-70b"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["text"]) == 7 * 4
    assert body["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    replica = next(iter(fleet))
    assert headers["x-replica-id"] == replica.id
    assert headers["x-replica-region"] == "us-east"


async def test_chat_completion(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet({"model": "m"})
    status, _, body = await post(
        http,
        url(fleet, "/v1/chat/completions"),
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            ],
            "max_completion_tokens": 3,
        },
    )
    assert status == 200
    assert body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant" and len(msg["content"]) == 12
    assert body["usage"]["completion_tokens"] == 3


async def test_benchmark_fields_set_lengths(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    body = {
        "prompt": "q1",
        "prompt_tokens": 900,
        "prefix_id": "g1",
        "prefix_tokens": 512,
        "max_tokens": 2,
    }
    _, _, first = await post(http, url(fleet, "/v1/completions"), body)
    _, _, second = await post(http, url(fleet, "/v1/completions"), {**body, "prompt": "q2"})
    assert first["usage"]["prompt_tokens"] == 900
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # Same 512-token named prefix, different question: exactly the prefix blocks hit.
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 512


async def test_streaming_completion(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet()
    body = {"prompt": "hello", "max_tokens": 5, "stream": True}
    async with http.post(url(fleet, "/v1/completions"), json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["x-replica-id"] == next(iter(fleet)).id
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 5
    assert all(c["object"] == "text_completion" for c in chunks)
    assert all(len(c["choices"][0]["text"]) == 4 for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]
    assert len({c["id"] for c in chunks}) == 1


async def test_streaming_chat_with_usage(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    body = {
        "messages": [{"role": "user", "content": "hi " * 50}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(url(fleet, "/v1/chat/completions"), json=body) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c for c in chunks[1:] if c["choices"]]
    assert len(content) == 4
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert content[-1]["choices"][0]["finish_reason"] == "length"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4


async def test_unknown_model_is_404_in_openai_format(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"model": "served"})
    status, headers, body = await post(
        http, url(fleet, "/v1/completions"), {"model": "other", "prompt": "x"}
    )
    assert status == 404
    assert body["error"]["code"] == 404 and "other" in body["error"]["message"]
    assert headers["x-replica-id"] == next(iter(fleet)).id


async def test_bad_bodies_are_400(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet({"num_gpu_blocks": 8, "block_size": 16})
    target = url(fleet, "/v1/completions")
    for body in ({"max_tokens": 3}, {"prompt": "x", "max_tokens": 0}, {"prompt": "x" * 1000}):
        status, _, reply = await post(http, target, body)
        assert status == 400, body
        assert "message" in reply["error"]
    async with http.post(target, data=b"{not json") as resp:
        assert resp.status == 400
    stats = await (await http.get(url(fleet, "/sim/stats"))).json()
    assert stats["rejected"] == 4 and stats["served"] == 0


async def test_metrics_have_vllm_names(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"model": "llama-70b", "num_gpu_blocks": 1000, "block_size": 16})
    for _ in range(2):
        await post(http, url(fleet, "/v1/completions"), {"prompt": "p" * 2000, "max_tokens": 2})
    async with http.get(url(fleet, "/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["x-replica-id"] == next(iter(fleet)).id
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    by_name: dict[str, list[dict[str, str]]] = {}
    for name, labels in samples:
        by_name.setdefault(name, []).append(dict(labels))
    for name in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:time_to_first_token_seconds_count",
        "vllm:request_success_total",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert name in by_name, name
        # vLLM v1 labels every series with the served model and the engine core
        assert all(
            labels.get("model_name") == "llama-70b" and labels.get("engine") == "0"
            for labels in by_name[name]
        ), name
    model = (("engine", "0"), ("model_name", "llama-70b"))
    assert samples[("vllm:prefix_cache_queries_total", model)] == 1000.0
    # The second identical prompt hit all but its last block: (500 - 1) // 16 * 16 tokens.
    assert samples[("vllm:prefix_cache_hits_total", model)] == 496.0
    assert samples[("vllm:time_to_first_token_seconds_count", model)] == 2.0
    assert samples[("vllm:num_requests_waiting", model)] == 0.0
    assert samples[("vllm:kv_cache_usage_perc", model)] == 0.0
    success = (("engine", "0"), ("finished_reason", "length"), ("model_name", "llama-70b"))
    assert samples[("vllm:request_success_total", success)] == 2
    (info,) = by_name["vllm:cache_config_info"]
    assert info["block_size"] == "16" and info["num_gpu_blocks"] == "1000"
    assert info["engine"] == "0" and "model_name" not in info  # as vLLM: config, not model
    assert samples[("vllm:cache_config_info", tuple(sorted(info.items())))] == 1.0


async def test_live_queue_shows_in_metrics_and_drains(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"max_num_seqs": 2, "speed": 5.0})
    target = url(fleet, "/v1/completions")
    jobs = [
        asyncio.create_task(post(http, target, {"prompt": f"job {i}", "max_tokens": 20}))
        for i in range(8)
    ]
    await asyncio.sleep(0.05)
    text = await (await http.get(url(fleet, "/metrics"))).text()
    gauges = {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name in ("vllm:num_requests_waiting", "vllm:num_requests_running")
    }
    assert gauges["vllm:num_requests_running"] == 2.0
    assert gauges["vllm:num_requests_waiting"] >= 4.0
    results = await asyncio.gather(*jobs)
    assert [r[0] for r in results] == [200] * 8
    stats = await (await http.get(url(fleet, "/sim/stats"))).json()
    assert stats["engine"]["waiting"] == 0 and stats["engine"]["running"] == 0
    assert stats["served"] == 8


async def test_peak_in_flight_counts_waiting_and_running_and_restarts_on_read(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    """`POST /sim/peak`: the most requests held at once since the last read (what an
    end-to-end test compares with a gateway's cap on requests in flight); reading it
    restarts the peak from what is held now and leaves the queues alone."""
    fleet = await make_fleet({"max_num_seqs": 2, "speed": 5.0})
    target = url(fleet, "/v1/completions")
    jobs = [
        asyncio.create_task(post(http, target, {"prompt": f"job {i}", "max_tokens": 20}))
        for i in range(5)
    ]
    await asyncio.sleep(0.05)
    async with http.post(url(fleet, "/sim/peak")) as resp:
        assert (await resp.json()) == {"peak_in_flight": 5}
    results = await asyncio.gather(*jobs)
    assert [r[0] for r in results] == [200] * 5  # nothing aborted by the read
    stats = await (await http.get(url(fleet, "/sim/stats"))).json()
    assert stats["engine"]["peak_in_flight"] == 5  # restarted at 5: still held then
    async with http.post(url(fleet, "/sim/peak")) as resp:
        assert (await resp.json()) == {"peak_in_flight": 5}
    status, _, _ = await post(http, target, {"prompt": "one", "max_tokens": 1})
    assert status == 200
    async with http.post(url(fleet, "/sim/peak")) as resp:
        assert (await resp.json()) == {"peak_in_flight": 1}


async def test_cross_region_requests_pay_the_rtt(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    table = {("eu-west", "us-east"): 200.0, ("us-west", "us-east"): 60.0}
    fleet = await make_fleet(
        {"region": "us-east", "speed": 50.0}, rtt_ms=lambda a, b: table[(a, b)]
    )
    target = url(fleet, "/v1/completions")
    body = {"prompt": "hello", "max_tokens": 2}

    async def timed(**headers: str) -> float:
        t0 = time.perf_counter()
        status, _, _ = await post(http, target, body, **headers)
        assert status == 200
        return time.perf_counter() - t0

    await timed()  # warm the connection
    local = await timed()
    same = await timed(**{"x-heliostat-origin-region": "us-east"})
    far = await timed(**{"x-heliostat-origin-region": "eu-west"})
    near = await timed(**{"x-heliostat-origin-region": "us-west"})
    unknown = await timed(**{"x-heliostat-origin-region": "mars"})
    assert same < local + 0.05
    assert unknown < local + 0.05
    assert 0.19 <= far - local < 0.3
    assert 0.055 <= near - local < 0.16

    # Streaming: the response headers (the first bytes) already carry the full round trip.
    t0 = time.perf_counter()
    headers = {"x-heliostat-origin-region": "eu-west"}
    async with http.post(target, json={**body, "stream": True}, headers=headers) as resp:
        first_byte = time.perf_counter() - t0
        await resp.read()
    assert first_byte >= 0.19

    stats = await (await http.get(url(fleet, "/sim/stats"))).json()
    assert stats["by_origin_region"] == {"us-east": 1, "eu-west": 2, "us-west": 1, "mars": 1}
    assert stats["rtt_delay_ms"] == 200.0 * 2 + 60.0


async def test_stats_count_sessions_and_reset_clears_everything(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    target = url(fleet, "/v1/completions")
    long_prompt = {"prompt": "shared context " * 100, "max_tokens": 2}
    for session in ("s1", "s1", "s2"):
        await post(http, target, long_prompt, **{"x-session-id": session})
    stats = await (await http.get(url(fleet, "/sim/stats"))).json()
    assert stats["served"] == 3 and stats["received"] == 3
    assert stats["by_session"] == {"s1": 2, "s2": 1}
    assert stats["prefix_cache"]["hit_requests"] == 2
    assert stats["prefix_cache"]["hits"] > 0

    async with http.post(url(fleet, "/sim/reset")) as resp:
        assert resp.status == 200
        after = await resp.json()
    assert after["served"] == 0 and after["by_session"] == {}
    assert after["prefix_cache"]["hits"] == 0 and after["engine"]["cached_blocks"] == 0

    # The prefix cache is really gone: the same prompt misses once, then hits again.
    _, _, body = await post(http, target, long_prompt)
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    text = await (await http.get(url(fleet, "/metrics"))).text()
    hits = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "vllm:prefix_cache_queries_total"
    ]
    assert hits == [float(body["usage"]["prompt_tokens"])]  # counters restarted at zero


async def test_reset_aborts_queued_requests(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"max_num_seqs": 1, "speed": 1.0})
    target = url(fleet, "/v1/completions")
    jobs = [
        asyncio.create_task(post(http, target, {"prompt": "slow", "max_tokens": 500}))
        for _ in range(3)
    ]
    await asyncio.sleep(0.1)
    await http.post(url(fleet, "/sim/reset"))
    results = await asyncio.wait_for(asyncio.gather(*jobs), 5)
    assert [r[0] for r in results] == [503] * 3
    stats = await (await http.get(url(fleet, "/sim/stats"))).json()
    assert stats["engine"]["waiting"] == 0 and stats["engine"]["running"] == 0
    assert stats["aborted"] == 0  # the aborts belong to the statistics that were reset
    # Still serving afterwards.
    status, _, _ = await post(http, target, {"prompt": "x", "max_tokens": 1})
    assert status == 200


async def test_health_and_models(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet({"model": "m1", "version": "v7"})
    async with http.get(url(fleet, "/health")) as resp:
        assert resp.status == 200
        assert resp.headers["x-replica-version"] == "v7"
    async with http.get(url(fleet, "/v1/models")) as resp:
        body = await resp.json()
    assert [m["id"] for m in body["data"]] == ["m1"]


async def test_replicas_in_one_fleet_are_independent(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"region": "a"}, {"region": "b"})
    _, h0, _ = await post(http, url(fleet, "/v1/completions", 0), {"prompt": "x"})
    _, h1, _ = await post(http, url(fleet, "/v1/completions", 1), {"prompt": "x"})
    assert (h0["x-replica-region"], h1["x-replica-region"]) == ("a", "b")
    assert h0["x-replica-id"] != h1["x-replica-id"]
    s0 = await (await http.get(url(fleet, "/sim/stats", 0))).json()
    s1 = await (await http.get(url(fleet, "/sim/stats", 1))).json()
    assert s0["served"] == 1 and s1["served"] == 1


async def test_client_that_hangs_up_frees_the_gpu(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"speed": 1.0})
    target = url(fleet, "/v1/completions")
    with contextlib.suppress(asyncio.TimeoutError):
        await http.post(
            target,
            json={"prompt": "long job", "max_tokens": 1000},
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    async with http.post(
        target, json={"prompt": "long stream", "max_tokens": 1000, "stream": True}
    ) as resp:
        await resp.content.readline()  # the first chunk arrives, then we hang up
        resp.close()
    for _ in range(100):
        stats = await (await http.get(url(fleet, "/sim/stats"))).json()
        if stats["aborted"] == 2:
            break
        await asyncio.sleep(0.02)
    assert stats["aborted"] == 2 and stats["served"] == 0
    assert stats["engine"]["running"] == 0 and stats["engine"]["kv_cache_usage"] == 0.0


async def test_orca_load_report_as_vllm_answers_it(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    """A unary answer carries vLLM's `endpoint-load-metrics` header when asked for it, in the
    asked format; a streamed answer, an unknown format or no request header carry none."""
    fleet = await make_fleet({"region": "us-east", "model": "llama-70b"})
    target = url(fleet, "/v1/completions")
    body = {"model": "llama-70b", "prompt": "x" * 400, "max_tokens": 3}

    _, headers, _ = await post(http, target, body, **{"endpoint-load-metrics-format": "TEXT"})
    text = headers["endpoint-load-metrics"]
    assert text.startswith("TEXT named_metrics.kv_cache_usage_perc=")
    pairs = dict(p.split("=") for p in text[len("TEXT ") :].split(", "))
    assert set(pairs) == {"named_metrics.kv_cache_usage_perc", "named_metrics.num_requests_waiting"}
    assert 0.0 <= float(pairs["named_metrics.kv_cache_usage_perc"]) <= 1.0
    assert pairs["named_metrics.num_requests_waiting"] == "0.0"  # a float, printed as vLLM does

    _, headers, _ = await post(http, target, body, **{"endpoint-load-metrics-format": "json"})
    kind, _, payload = headers["endpoint-load-metrics"].partition(" ")
    assert kind == "JSON"
    assert set(json.loads(payload)["named_metrics"]) == {
        "kv_cache_usage_perc",
        "num_requests_waiting",
    }

    for extra in ({}, {"endpoint-load-metrics-format": "protobuf"}):
        _, headers, _ = await post(http, target, body, **extra)
        assert "endpoint-load-metrics" not in headers

    streamed = {**body, "stream": True}
    async with http.post(
        target, json=streamed, headers={"endpoint-load-metrics-format": "TEXT"}
    ) as resp:
        assert resp.status == 200
        await resp.read()
        assert "endpoint-load-metrics" not in resp.headers
