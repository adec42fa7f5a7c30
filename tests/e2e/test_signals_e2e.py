"""Simulated replicas behind a real Envoy, scraped by a real `heliostat serve`."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    SimFleet,
    free_port,
    policy_document,
    request,
    wait_until,
    write_policy,
)

pytestmark = pytest.mark.envoy

MODEL = "llama-70b"


@pytest.fixture
def fleet_policy(tmp_path: Path) -> tuple[Path, int, list[str]]:
    gateway = free_port()
    addresses = [f"{LOCALHOST}:{free_port()}" for _ in range(2)]
    policy = tmp_path / "policy.yaml"
    document = policy_document(
        gateway_port=gateway,
        endpoints=[(addresses[0], "eu-west"), (addresses[1], "us-east")],
        extra_model={"signals": {"interval": "500ms", "timeout": "250ms", "stale_after": "2s"}},
    )
    document["spec"]["models"][0]["endpoints"][0]["sim"] = {"max_num_seqs": 2}
    write_policy(policy, document)
    return policy, gateway, addresses


def _sse_events(response: http.client.HTTPResponse) -> list[str]:
    events = []
    for raw in response:
        line = raw.decode().strip()
        if line.startswith("data: "):
            events.append(line.removeprefix("data: "))
    return events


def test_openai_streaming_chat_through_envoy_to_a_simulated_replica(
    tmp_path: Path,
    fleet_policy: tuple[Path, int, list[str]],
    processes: list[Process],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    policy, gateway, (eu, _us) = fleet_policy
    fleet = SimFleet(policy, tmp_path)
    processes.append(fleet)
    fleet.start()
    heliostat = start_heliostat(policy)
    start_envoy(heliostat, "gw-eu", "eu-west")

    # What an OpenAI SDK sends for client.chat.completions.create(..., stream=True).
    connection = http.client.HTTPConnection(LOCALHOST, gateway, timeout=10)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello from the sun."}],
        "stream": True,
        "max_tokens": 8,
    }
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={
            "content-type": "application/json",
            "accept": "text/event-stream",
            "x-model": MODEL,
            "authorization": "Bearer sk-test",
        },
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    assert response.getheader("x-replica-id") == eu
    assert response.getheader("x-replica-region") == "eu-west"
    events = _sse_events(response)
    connection.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" or any(
        c["choices"] and c["choices"][0].get("finish_reason") for c in chunks
    )

    plain = request(gateway, body={"model": MODEL, "prompt": "hi", "max_tokens": 4})
    assert plain.status == 200
    assert plain.json()["usage"]["completion_tokens"] == 4
    stats = fleet.stats(eu)
    assert stats["served"] == 2
    assert stats["by_origin_region"] == {"eu-west": 2}


def test_serve_shows_live_signals_and_scrape_errors_of_the_fleet(
    tmp_path: Path,
    fleet_policy: tuple[Path, int, list[str]],
    processes: list[Process],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    policy, gateway, (eu, us) = fleet_policy
    fleet = SimFleet(policy, tmp_path, speed=1.0)
    processes.append(fleet)
    fleet.start()
    heliostat = start_heliostat(policy)
    start_envoy(heliostat, "gw-eu", "eu-west")

    def signal(address: str) -> dict[str, object]:
        entries = heliostat.state()["signals"]["models"][MODEL]
        return next(e for e in entries if e["address"] == address)

    wait_until(lambda: signal(eu)["scraped_at"] and not signal(eu)["stale"], message="first scrape")
    # Load eu's two slots with long generations: the scraper sees them running and queued.
    load = [
        threading.Thread(
            target=request,
            args=(gateway,),
            kwargs={"body": {"model": MODEL, "prompt": "x", "max_tokens": 100}, "timeout": 30},
        )
        for _ in range(5)
    ]
    for thread in load:
        thread.start()
    busy = wait_until(
        lambda: (s := signal(eu)) and s["running"] == 2 and s["waiting"] >= 1 and s,
        timeout=10,
        message="running and waiting requests visible in /debug/state",
    )
    assert busy["kv_usage"] > 0
    assert busy["age_s"] < 2

    fleet.fault(us, kind="no_metrics")
    failing = wait_until(
        lambda: (s := signal(us)) and s["consecutive_failures"] >= 2 and s,
        message="scrape failures counted",
    )
    assert failing["error"] == "http_status"
    assert heliostat.metric("heliostat_scrape_errors_total", reason="http_status") >= 2
    fleet.heal(us)
    wait_until(lambda: signal(us)["error"] is None, message="recovered after heal")
    for thread in load:
        thread.join(timeout=30)
