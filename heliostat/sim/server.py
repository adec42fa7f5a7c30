"""The HTTP face of a replica: vLLM's OpenAI-compatible API plus the simulator's control routes.

Routes
    ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
    ``GET /health``, ``GET /metrics``;
    ``GET /sim/stats``, ``POST /sim/reset``, ``GET|POST|DELETE /sim/fault`` (``?kind=`` on DELETE
    heals one kind only), ``POST /sim/peak`` (the most requests held at once since the last
    such call, waiting and running; the peak then restarts, queues untouched).

Every response names its replica (``x-replica-id``, ``x-replica-region``, and
``x-replica-version`` when configured) so a test behind Envoy can tell where a request went.
A unary answer carries vLLM's ORCA load report when the request asks for it (`orca`).

Cross-region cost: an inference request whose ``x-heliostat-origin-region`` names another region
waits half the round trip before it reaches the engine and the other half before the first
response byte, so TTFT and end-to-end latency both grow by one RTT, as over a real WAN. Control
routes (health, metrics, ``/sim``) are not delayed: the control plane scrapes from nearby.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from heliostat.sim.engine import (
    Engine,
    EngineRequest,
    EventKind,
    RequestEvent,
    RequestTooLarge,
    Status,
)
from heliostat.sim.faults import Fault, FaultKind
from heliostat.sim.openai_api import (
    BadRequest,
    GenerationRequest,
    ResponseShaper,
    error_body,
    parse_generation,
    usage,
)
from heliostat.sim.orca import FORMAT_HEADER, REPORT_HEADER, load_report
from heliostat.sim.stats import ReplicaStats
from heliostat.sim.tokens import output_text, output_token
from heliostat.wire import (
    ORIGIN_HEADER,
    REPLICA_ID_HEADER,
    REPLICA_REGION_HEADER,
    REPLICA_VERSION_HEADER,
    SESSION_HEADER,
)

if TYPE_CHECKING:
    from heliostat.sim.replica import Replica


REPLICA_KEY: web.AppKey[Replica] = web.AppKey("replica")
_EGRESS_DELAY = web.RequestKey("heliostat_sim_egress_delay", float)


def _replica(request: web.Request) -> Replica:
    return request.app[REPLICA_KEY]


def _error(status: int, message: str, *, type_: str, param: str | None = None) -> web.Response:
    return web.json_response(
        error_body(message, type_=type_, code=status, param=param), status=status
    )


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without answering (the ``close`` and ``hang`` faults).

    aiohttp insists on a response object; writing it to an aborted transport is a no-op.
    """
    request[_EGRESS_DELAY] = 0.0
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    replica = _replica(request)
    response.headers[REPLICA_ID_HEADER] = replica.id
    response.headers[REPLICA_REGION_HEADER] = replica.config.region
    if replica.config.version is not None:
        response.headers[REPLICA_VERSION_HEADER] = replica.config.version
    delay = request.get(_EGRESS_DELAY, 0.0)
    if delay > 0:
        await asyncio.sleep(delay)


# -- inference ---------------------------------------------------------------------------------


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    replica = _replica(request)
    stats = replica.stats
    await _arrive(request, replica)
    faulted = await _injected_fault(request, replica)
    if faulted is not None:
        return faulted
    gen = await _parsed(request, replica, chat=chat)
    if not isinstance(gen, GenerationRequest):
        return gen

    events: asyncio.Queue[RequestEvent] = asyncio.Queue()
    req = EngineRequest(prompt=gen.prompt, max_tokens=gen.max_tokens, listener=events.put_nowait)
    driver = replica.driver
    try:
        driver.submit(req)
    except RequestTooLarge as exc:
        stats.rejected += 1
        return _error(400, str(exc), type_="BadRequestError", param="max_tokens")
    shaper = ResponseShaper(chat=chat, model=replica.config.model)
    try:
        if gen.stream:
            return await _stream(request, stats, gen, req, events, shaper)
        report_format = request.headers.get(FORMAT_HEADER)
        return await _unary(stats, driver.engine, req, events, shaper, report_format)
    finally:
        # Client gone (handler cancelled, or a failed stream write): free the simulated GPU.
        # The driver is the one the request was submitted to, even if a reset came since.
        if req.status in (Status.WAITING, Status.RUNNING):
            driver.abort(req)
            stats.aborted += 1


async def _arrive(request: web.Request, replica: Replica) -> None:
    """Count the request by origin and session, then pay half the RTT on the way in."""
    stats = replica.stats
    stats.received += 1
    origin = request.headers.get(ORIGIN_HEADER)
    if origin:
        stats.by_origin_region[origin] += 1
    session = request.headers.get(SESSION_HEADER)
    if session:
        stats.by_session[session] += 1
    rtt = replica.rtt_seconds(origin)
    if rtt > 0:
        stats.rtt_delay_ms += rtt * 1000.0
        await asyncio.sleep(rtt / 2)
        request[_EGRESS_DELAY] = rtt / 2


async def _injected_fault(request: web.Request, replica: Replica) -> web.StreamResponse | None:
    """The response of a fault that fires now (closed, hung then closed, or an error)."""
    stats, faults = replica.stats, replica.faults
    if faults.fires(FaultKind.CLOSE):
        stats.faulted[FaultKind.CLOSE.value] += 1
        return _drop(request)
    if faults.fires(FaultKind.HANG):
        stats.faulted[FaultKind.HANG.value] += 1
        await replica.wait_hang_released()
        return _drop(request)
    fault = faults.fires(FaultKind.ERROR)
    if fault is not None:
        stats.faulted[FaultKind.ERROR.value] += 1
        return _error(fault.status, "simulated engine failure", type_="InternalServerError")
    return None


async def _parsed(
    request: web.Request, replica: Replica, *, chat: bool
) -> GenerationRequest | web.StreamResponse:
    """The request's generation parameters, or the OpenAI-shaped 400/404 that refuses it."""
    stats = replica.stats
    try:
        body = await request.json()
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        stats.rejected += 1
        return _error(400, "request body is not valid JSON", type_="BadRequestError")
    try:
        gen = parse_generation(body, chat=chat)
    except BadRequest as exc:
        stats.rejected += 1
        return _error(400, str(exc), type_="BadRequestError", param=exc.param)
    if gen.model is not None and gen.model != replica.config.model:
        stats.rejected += 1
        return _error(
            404,
            f"The model `{gen.model}` does not exist.",
            type_="NotFoundError",
            param="model",
        )
    return gen


def _record_served(stats: ReplicaStats, req: EngineRequest) -> dict[str, Any]:
    stats.served += 1
    stats.prompt_tokens += req.prompt_len
    stats.completion_tokens += req.num_generated
    stats.prefix_queries += req.prompt_len
    stats.prefix_hits += req.num_cached_tokens
    if req.num_cached_tokens:
        stats.prefix_hit_requests += 1
    return usage(req.prompt_len, req.num_generated, req.num_cached_tokens)


async def _unary(
    stats: ReplicaStats,
    engine: Engine,
    req: EngineRequest,
    events: asyncio.Queue[RequestEvent],
    shaper: ResponseShaper,
    report_format: str | None,
) -> web.StreamResponse:
    while True:
        event = await events.get()
        if event.kind is EventKind.FINISH:
            use = _record_served(stats, req)
            response = web.json_response(shaper.full(output_text(req.num_generated), use))
            # As vLLM: the engine's gauges at answer time, on unary answers only (see orca.py).
            report = load_report(report_format, engine.pool.usage, engine.num_waiting)
            if report is not None:
                response.headers[REPORT_HEADER] = report
            return response
        if event.kind is EventKind.ABORT:
            stats.aborted += 1
            return _error(503, "request aborted by the replica", type_="ServiceUnavailableError")


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _stream(
    request: web.Request,
    stats: ReplicaStats,
    gen: GenerationRequest,
    req: EngineRequest,
    events: asyncio.Queue[RequestEvent],
    shaper: ResponseShaper,
) -> web.StreamResponse:
    # Headers go out at once, as vLLM's StreamingResponse does; the first token follows.
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await resp.prepare(request)
        opening = shaper.role_chunk()
        if opening is not None:
            await resp.write(_sse(opening))
        while True:
            event = await events.get()
            if event.kind is EventKind.TOKEN:
                last = event.index + 1 >= req.max_tokens
                chunk = shaper.chunk(output_token(event.index), "length" if last else None)
                await resp.write(_sse(chunk))
            elif event.kind is EventKind.FINISH:
                use = _record_served(stats, req)
                if gen.include_usage:
                    await resp.write(_sse(shaper.usage_chunk(use)))
                break
            else:
                stats.aborted += 1
                err = error_body(
                    "request aborted by the replica", type_="ServiceUnavailableError", code=503
                )
                await resp.write(_sse(err))
                break
        await resp.write(_sse("[DONE]"))
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        # The client went away mid-stream (aiohttp raises ClientConnectionResetError, a
        # ConnectionError, or RuntimeError on a closed transport); the caller frees the slot.
        pass
    return resp


# -- observability -----------------------------------------------------------------------------


async def _health(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


async def _metrics(request: web.Request) -> web.StreamResponse:
    replica = _replica(request)
    if replica.faults.get(FaultKind.NO_METRICS) is not None:
        return web.Response(status=503, text="metrics unavailable (simulated fault)\n")
    if replica.faults.get(FaultKind.METRICS_HANG) is not None:
        await replica.wait_hang_released()
        return web.Response(status=503, text="metrics unavailable (simulated fault)\n")
    return web.Response(
        body=replica.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _models(request: web.Request) -> web.StreamResponse:
    replica = _replica(request)
    model = {
        "id": replica.config.model,
        "object": "model",
        "created": 0,
        "owned_by": "heliostat-sim",
        "max_model_len": replica.config.num_gpu_blocks * replica.config.block_size,
    }
    return web.json_response({"object": "list", "data": [model]})


# -- simulator control -------------------------------------------------------------------------


async def _sim_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(_replica(request).snapshot())


async def _sim_reset(request: web.Request) -> web.StreamResponse:
    replica = _replica(request)
    await replica.reset()
    return web.json_response(replica.snapshot())


async def _sim_peak(request: web.Request) -> web.StreamResponse:
    return web.json_response({"peak_in_flight": _replica(request).restart_peak()})


async def _sim_fault_get(request: web.Request) -> web.StreamResponse:
    return web.json_response({"faults": [f.to_json() for f in _replica(request).faults.active()]})


async def _sim_fault_post(request: web.Request) -> web.StreamResponse:
    replica = _replica(request)
    try:
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError("fault must be a JSON object")
        fault = Fault.from_json(data)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return _error(400, str(exc), type_="BadRequestError")
    replica.set_fault(fault)
    return web.json_response({"faults": [f.to_json() for f in replica.faults.active()]})


async def _sim_fault_delete(request: web.Request) -> web.StreamResponse:
    replica = _replica(request)
    kind_name = request.query.get("kind")
    kind: FaultKind | None = None
    if kind_name:
        try:
            kind = FaultKind(kind_name)
        except ValueError:
            return _error(400, f"unknown fault kind {kind_name!r}", type_="BadRequestError")
    replica.clear_faults(kind)
    return web.json_response({"faults": [f.to_json() for f in replica.faults.active()]})


def build_app(replica: Replica) -> web.Application:
    """The aiohttp application of one replica."""
    # Large prompts are the point of a prefix-cache benchmark: allow 64 MiB bodies.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[REPLICA_KEY] = replica
    app.on_response_prepare.append(_on_prepare)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/sim/stats", _sim_stats)
    app.router.add_post("/sim/reset", _sim_reset)
    app.router.add_post("/sim/peak", _sim_peak)
    app.router.add_get("/sim/fault", _sim_fault_get)
    app.router.add_post("/sim/fault", _sim_fault_post)
    app.router.add_delete("/sim/fault", _sim_fault_delete)
    return app
