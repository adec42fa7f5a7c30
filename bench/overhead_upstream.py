"""The instant upstream of the overhead benchmark: HTTP/1.1 answered as soon as it is read.

    python -m bench.overhead_upstream --port PORT

No model, no framework: a raw asyncio protocol, so what a request costs here is the socket
and a few parsed bytes, and a latency difference between two proxies in front of it is the
proxies'. It answers every POST with a small OpenAI-shaped completion, `GET /metrics` with
an idle vLLM exposition (heliostat scrapes it, so the endpoint is known and healthy rather
than stale) and `GET /health` with 200. Keep-alive, content-length and chunked request
bodies. It runs in its own process so the benchmark's client does not share its GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from heliostat.lab.processes import LOCALHOST
from heliostat.sim.metrics import ReplicaMetrics

COMPLETION = (
    b'{"id":"cmpl-instant","object":"text_completion","model":"instant",'
    b'"choices":[{"index":0,"text":"ok","finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


def _idle_metrics() -> bytes:
    """An idle vLLM page, rendered by the simulator's own metric families (as vLLM names them)."""
    metrics = ReplicaMetrics("instant", block_size=16, num_gpu_blocks=1024)
    metrics.refresh(waiting=0, running=0, kv_usage=0.0)
    return metrics.render()


METRICS = _idle_metrics()


def _response(status: bytes, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: " + content_type + b"\r\n"
        b"content-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + (b"" if keep_alive else b"connection: close\r\n")
        + b"\r\n"
    )
    return head + body


class _Incomplete(Exception):
    """The buffer does not hold a whole request yet."""


class InstantHttp(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None:
            try:
                consumed, method, path, keep_alive = _parse(self._buffer)
            except _Incomplete:
                return
            except ValueError:
                self._transport.write(_response(b"400 Bad Request", b"text/plain", b"", False))
                self._transport.close()
                return
            del self._buffer[:consumed]
            self._transport.write(_answer(method, path, keep_alive))
            if not keep_alive:
                self._transport.close()
                return


def _answer(method: bytes, path: bytes, keep_alive: bool) -> bytes:
    if method == b"GET" and path.startswith(b"/metrics"):
        return _response(b"200 OK", b"text/plain; version=0.0.4", METRICS, keep_alive)
    if method == b"GET":
        return _response(b"200 OK", b"text/plain", b"ok\n", keep_alive)
    return _response(b"200 OK", b"application/json", COMPLETION, keep_alive)


def _parse(buffer: bytearray) -> tuple[int, bytes, bytes, bool]:
    """One whole request at the start of `buffer`: (bytes used, method, path, keep-alive)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        raise _Incomplete
    lines = bytes(buffer[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    method, path, version = parts
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("bad header line")
        headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get(b"connection", b"")
    keep_alive = connection != b"close" and (version == b"HTTP/1.1" or connection == b"keep-alive")
    start = end + 4
    if headers.get(b"transfer-encoding") == b"chunked":
        return _chunked_end(buffer, start), method, path, keep_alive
    length = int(headers.get(b"content-length", b"0"))
    if len(buffer) < start + length:
        raise _Incomplete
    return start + length, method, path, keep_alive


def _chunked_end(buffer: bytearray, position: int) -> int:
    """Where a chunked body starting at `position` ends (trailers are not expected)."""
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            raise _Incomplete
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2 + size + 2
        if len(buffer) < position:
            raise _Incomplete
        if size == 0:
            return position


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(InstantHttp, LOCALHOST, port)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead_upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
