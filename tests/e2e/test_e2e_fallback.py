"""The fallback model through three real Envoy gateways and a simulated two-model fleet.

llama-70b (one small replica per region) falls back to llama-8b (one larger replica per
region). Every region's gateways are driven past llama-70b's capacity at once, so no
in-budget neighbour can take its excess: the control law raises the fallback share, the
gateways' Lua filter moves that share of requests to llama-8b's routes (body model rewritten,
streams intact), and every answer names the model that served it. Then the load drops and the
share, and the traffic to llama-8b, go back to zero. Measured at the replicas (`/sim/stats`),
in the answers' headers, and in heliostat's /debug/state.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from heliostat.lab.mesh import MODEL, ExtraModel, Mesh, start_mesh
from heliostat.lab.processes import LOCALHOST
from heliostat.sim import loadgen
from heliostat.wire import SERVED_MODEL_HEADER
from tests.e2e.harness import Process, wait_until

pytestmark = pytest.mark.envoy

SMALL = "llama-8b"
MAX_SHARE = 0.5
REGIONS = ("us-east", "eu-west", "ap-southeast")
# One llama-70b replica per region: 4 slots at speed 2, about 10 requests/s (24 tokens each).
OVERLOAD_RPS = 15.0  # 1.5 x: 0.9 / 1.5 leaves 40% of the demand without a GPU, and the
# queue built before the share rose keeps the pressure up: the share goes to max_share
LIGHT_RPS = 2.0


def shares(mesh: Mesh) -> dict[str, float]:
    views = mesh.heliostat.state()["views"]["regions"]
    return {r: float(views[r][MODEL]["fallback"]["share"]) for r in REGIONS}


def received(stats: dict[str, dict[str, Any]]) -> Counter[str]:
    """Requests each origin region sent to these replicas, as the replicas counted them."""
    total: Counter[str] = Counter()
    for replica in stats.values():
        total.update(replica["by_origin_region"])
    return total


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes, and it
# failed twice inside the full suite while passing every time alone (cause under study).
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_under_saturation_a_bounded_share_falls_back_and_returns_to_zero_after(
    tmp_path: Path, processes: list[Process]
) -> None:
    mesh = start_mesh(
        tmp_path,
        processes,
        per_region=dict.fromkeys(REGIONS, 1),
        slots=4,
        speed=2.0,
        model_overrides={"fallback": {"model": SMALL, "max_share": MAX_SHARE}},
        extra_models=[ExtraModel(SMALL, dict.fromkeys(REGIONS, 1), slots=8, speed=4.0)],
    )
    small = {a for addresses in mesh.models[SMALL].values() for a in addresses}
    wait_until(
        lambda: all(len(envoy.hosts(SMALL)) == 3 for envoy in mesh.envoys.values()),
        message=f"every gateway holds {SMALL}'s hosts",
    )

    # At rest: nothing falls back, and a normal answer names its model too.
    (plain,) = mesh.run(mesh.shots("us-east", 5, 1)[:1]).results
    (direct,) = mesh.run(mesh.shots("us-east", 5, 1, model=SMALL)[:1]).results
    assert plain.ok and plain.headers[SERVED_MODEL_HEADER] == MODEL and plain.replica not in small
    assert direct.ok and direct.headers[SERVED_MODEL_HEADER] == SMALL
    assert shares(mesh) == dict.fromkeys(REGIONS, 0.0)

    # Every region past capacity at once: no in-budget neighbour has room to lend.
    duration = 22.0
    shots = [s for r in REGIONS for s in mesh.shots(r, OVERLOAD_RPS, duration, label="surge")]
    started = time.monotonic()
    finish = mesh.start_load(shots, timeout=60)
    wait_until(
        lambda: all(share > 0 for share in shares(mesh).values()),
        timeout=20,
        interval=0.25,
        message="a fallback share in every region",
    )
    rose_after = time.monotonic() - started
    time.sleep(2.0)  # let the share climb a few levels before measuring
    before_main = received(mesh.stats())
    before_small = received(mesh.model_stats(SMALL))
    window_start = time.monotonic() - started
    seen: list[dict[str, float]] = []
    while time.monotonic() - started < duration - 1.0:
        seen.append(shares(mesh))
        time.sleep(0.5)
    moved = received(mesh.model_stats(SMALL)) - before_small
    kept = received(mesh.stats()) - before_main
    # While the share holds: plain OpenAI clients (the model only in the body) move too, and
    # a session stays on one model.
    url = f"http://{LOCALHOST}:{mesh.gateways['us-east']}/v1/completions"
    unary = loadgen.completion_body(MODEL, max_tokens=8, stream=False)
    clients = mesh.run(
        [loadgen.Shot(i * 0.02, url, {}, unary, "body") for i in range(30)]
        + [
            # A session's three requests go out within 10 ms: the share is published every
            # tick and may move between them, which moves the sessions whose bucket it
            # crosses (lua/fallback.lua); what is asserted is that a held share keeps a
            # session on one model. (Sent 0.2 s apart, a share moving in between split one
            # session of ten in one long run in five.)
            loadgen.Shot(
                0.6 + (i % 10) * 0.05 + (i // 10) * 0.004,
                url,
                {"x-session-id": f"s{i % 10}"},
                unary,
                "session",
            )
            for i in range(30)
        ]
    ).results
    report = finish()
    decisions = mesh.heliostat.state()["control"]["decisions"]["models"][MODEL]["regions"]
    fractions = {r: moved[r] / max(1, moved[r] + kept[r]) for r in REGIONS}
    print(
        f"\nfallback share in every region after {rose_after:.1f}s; published shares seen "
        f"{sorted({s for shot in seen for s in shot.values()})}; measured from "
        f"{window_start:.0f}s: { ({r: round(f, 3) for r, f in fractions.items()}) } "
        f"(moved {dict(moved)}, kept {dict(kept)}); us-east decision "
        f"{decisions['us-east']['fallback']['state']}"
    )
    assert all(0 < share <= MAX_SHARE for shot in seen for share in shot.values())
    for region in REGIONS:
        assert 0.05 < fractions[region] <= MAX_SHARE + 0.08, (region, fractions)

    # The fallback's replicas served those requests: the body's model was rewritten (they
    # answer 404 to another model's name), and the answers say who served them.
    small_stats = mesh.model_stats(SMALL)
    assert sum(s["rejected"] for s in small_stats.values()) == 0
    surge = [r for r in report.results if r.shot.label == "surge"]
    by_model = Counter(r.headers.get(SERVED_MODEL_HEADER) for r in surge)
    print("surge answers by served model:", dict(by_model), Counter(r.status for r in surge))
    assert set(by_model) == {MODEL, SMALL}
    fell_back = [r for r in surge if r.headers.get(SERVED_MODEL_HEADER) == SMALL]
    assert all(r.status == 200 and r.replica in small for r in fell_back)
    assert all(r.ttft is not None for r in fell_back)  # streams arrive as streams
    assert all(r.replica not in small for r in surge if r.headers.get(SERVED_MODEL_HEADER) == MODEL)
    assert sum(r.ok for r in surge) >= 0.95 * len(surge)
    # A burst on top of the surge: what neither the model nor its fallback can take within
    # budget is refused at once (429), the rest is served.
    assert all(r.ok or r.status == 429 for r in clients), Counter(r.status for r in clients)
    served = [r for r in clients if r.ok]
    body_only = Counter(r.headers[SERVED_MODEL_HEADER] for r in served if r.shot.label == "body")
    sessions: dict[str, set[str]] = {}
    for r in served:
        if r.shot.label == "session":
            sessions.setdefault(r.shot.headers["x-session-id"], set()).add(
                r.headers[SERVED_MODEL_HEADER]
            )
    print("body-routed answers:", dict(body_only), "models per session:", sessions)
    assert body_only[SMALL] > 0 and body_only[MODEL] > 0
    assert all(len(models) == 1 for models in sessions.values())

    # Pressure gone: the share returns to 0, then nothing more reaches the fallback.
    light = [s for r in REGIONS for s in mesh.shots(r, LIGHT_RPS, 26.0, label="light", seed=2)]
    finish = mesh.start_load(light, timeout=60)
    wait_until(
        lambda: shares(mesh) == dict.fromkeys(REGIONS, 0.0),
        timeout=30,
        interval=0.25,
        message="the fallback share back to 0 everywhere",
    )
    returned_after = time.monotonic() - started - duration
    time.sleep(1.0)  # the last route update reaches every gateway
    quiet = sum(s["received"] for s in mesh.model_stats(SMALL).values())
    time.sleep(4.0)
    later = sum(s["received"] for s in mesh.model_stats(SMALL).values())
    state = mesh.heliostat.state()["views"]["regions"]["us-east"][MODEL]["fallback"]
    print(f"share back to 0 {returned_after:.1f}s after the surge; reason {state['reason']}")
    assert later == quiet
    report = finish()
    tail = [r for r in report.results if r.started - report.results[0].started > 2]
    assert tail and all(r.ok and r.headers.get(SERVED_MODEL_HEADER) == MODEL for r in tail[-20:])
