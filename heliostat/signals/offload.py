"""Where scrapes run: on the serving event loop, or in a worker process of their own.

Fetching and parsing every replica's `/metrics` costs Python time; on the event loop that
serves the Envoys it competed with pushes (a third of the samples inside a push window to
1,000 delta streams, issue 17). `WorkerFetcher` runs the very same reads
(`scraper.read_endpoint`, `prometheus.query_engine`) in a child process
(`python -m heliostat.signals.worker`) and gets back the parsed `Reading`/`Failure` records.
Everything stateful stays in the serving process: targets, per-endpoint state and warnings
(`EndpointState.reject`), rates, metrics, publishing.

The protocol is framed pickles over the child's stdin/stdout (both ends are this code, the
child is our own): a frame is a 4-byte big-endian length and a pickled tuple.

    request:  (request id, "direct", (target,))
              (request id, "prometheus", (url, max_body_bytes, engine, targets))
    response: (request id, result)     the method's return value, as `LocalFetcher` gives it

A worker that dies (or stops answering) is logged, every read in flight fails with
`Reason.INTERNAL` naming the endpoint as any failure does, and the next read starts a new one.
The worker exits when its stdin closes, so it cannot outlive the serving process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import struct
import sys
from collections.abc import Sequence
from typing import Any, Final

import aiohttp

from heliostat.signals.http import new_session
from heliostat.signals.prometheus import query_engine
from heliostat.signals.record import Failure, Reading, Reason, ScrapeTarget
from heliostat.signals.scraper import read_endpoint

log = logging.getLogger(__name__)

HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 256 * 1024 * 1024
"""A length above this is a corrupt stream, not a message."""
READY: Final = -1
"""The request id of the frame a worker sends once it is up: `(READY, None)`."""
START_TIMEOUT_S: Final = 30.0
"""How long a new worker may take to import and say it is ready."""
ANSWER_SLACK_S: Final = 10.0
"""How much longer than a read's own timeout the worker may take before it counts as hung."""

DirectResult = tuple[Reading | Failure, float]
QueryResult = tuple[list[tuple[Reading | Failure, float | None]], float]


class FrameError(Exception):
    """The stream is not a sequence of frames."""


def encode(message: object) -> bytes:
    """One frame: length, then the pickled message."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length a frame header announces; raises `FrameError` when implausible."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes")
    return int(length)


def decode(body: bytes) -> Any:
    return pickle.loads(body)


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next message, or None at a clean end of stream (EOF between frames)."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("stream ended inside a frame header") from exc
        return None
    try:
        body = await reader.readexactly(frame_length(header))
    except asyncio.IncompleteReadError as exc:
        raise FrameError("stream ended inside a frame") from exc
    return decode(body)


class LocalFetcher:
    """Reads on the calling event loop, over one kept-alive aiohttp session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _live_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session()
        return self._session

    async def direct(self, target: ScrapeTarget) -> DirectResult:
        return await read_endpoint(self._live_session(), target)

    async def prometheus(
        self, url: str, max_body_bytes: int, engine: str, targets: list[ScrapeTarget]
    ) -> QueryResult:
        return await query_engine(self._live_session(), url, max_body_bytes, engine, targets)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def serve(self, method: str, args: Sequence[Any]) -> Any:
        """A request of the worker protocol, run here."""
        if method == "direct":
            return await self.direct(*args)
        if method == "prometheus":
            return await self.prometheus(*args)
        raise ValueError(f"unknown method {method!r}")


class WorkerGone(Exception):
    """The worker ended (or was ended) before answering."""


class _Worker:
    """One child process, the reads in flight to it and the task reading its answers."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.closing = False
        self.reader: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def fail_pending(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(WorkerGone(why))
            self.ready.exception()  # retrieved: nobody may be waiting
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerGone(why))


class WorkerFetcher:
    """Reads in a child process; same interface as `LocalFetcher`.

    The child is started by the first read and restarted by the first read after it died.
    `close()` ends it (closing its stdin, then killing it if it lingers) and waits for it.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        answer_slack_s: float = ANSWER_SLACK_S,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self._start_timeout_s = start_timeout_s
        self._command = list(command or [sys.executable, "-m", "heliostat.signals.worker"])
        self._answer_slack_s = answer_slack_s
        self._worker: _Worker | None = None
        self._next_id = 0
        self._starting = asyncio.Lock()
        self.starts = 0
        """Processes started so far (a restart after a crash counts)."""

    @property
    def pid(self) -> int | None:
        worker = self._worker
        if worker is None or worker.process.returncode is not None:
            return None
        return worker.process.pid

    async def direct(self, target: ScrapeTarget) -> DirectResult:
        try:
            result: DirectResult = await self._call("direct", (target,), target.timeout)
        except WorkerGone as exc:
            return Failure(Reason.INTERNAL, str(exc)), 0.0
        return result

    async def prometheus(
        self, url: str, max_body_bytes: int, engine: str, targets: list[ScrapeTarget]
    ) -> QueryResult:
        timeout = max(t.timeout for t in targets)
        try:
            result: QueryResult = await self._call(
                "prometheus", (url, max_body_bytes, engine, targets), timeout
            )
        except WorkerGone as exc:
            failure = Failure(Reason.INTERNAL, str(exc))
            return [(failure, None) for _ in targets], 0.0
        return result

    async def start(self) -> None:
        """Start the worker now and wait until it is up (it imports for a second or more),
        so that the first reads do not pay for it; a failure is logged, reads retry."""
        try:
            await self._running()
        except WorkerGone as exc:
            log.error("scrape_worker_start_failed", extra={"error": str(exc)})

    async def close(self) -> None:
        """End the worker and wait for it; a later read starts a new one."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await self._retire(worker, grace=2.0)
            worker.fail_pending("scrape worker closed")

    # --- internals -----------------------------------------------------------------------

    async def _call(self, method: str, args: tuple[Any, ...], timeout: float) -> Any:
        worker = await self._running()
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.pending[request_id] = future
        if worker.reader is None or worker.reader.done():  # died between start and now
            worker.pending.pop(request_id)
            raise WorkerGone("scrape worker exited")
        try:
            stdin = worker.process.stdin
            assert stdin is not None
            stdin.write(encode((request_id, method, args)))
            deadline = timeout + self._answer_slack_s
            try:
                async with asyncio.timeout(deadline):
                    return await future
            except TimeoutError:
                # The read has its own timeout inside the worker: no answer means it is hung.
                log.error(
                    "scrape_worker_hung", extra={"pid": worker.process.pid, "waited_s": deadline}
                )
                if worker is self._worker:
                    self._worker = None
                    await self._retire(worker, grace=0.0)
                raise WorkerGone(f"scrape worker did not answer within {timeout}s") from None
        finally:
            worker.pending.pop(request_id, None)

    async def _running(self) -> _Worker:
        async with self._starting:
            worker = self._worker
            if worker is not None and worker.process.returncode is None and not worker.closing:
                return worker
            process = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            self.starts += 1
            if self.starts > 1:
                log.warning("scrape_worker_restarted", extra={"pid": process.pid})
            else:
                log.info("scrape_worker_started", extra={"pid": process.pid})
            worker = _Worker(process)
            worker.reader = asyncio.create_task(
                self._read_answers(worker), name="heliostat-scrape-worker-reader"
            )
            self._worker = worker
            try:
                await asyncio.wait_for(asyncio.shield(worker.ready), self._start_timeout_s)
            except TimeoutError:
                waited = self._start_timeout_s
                log.error("scrape_worker_hung", extra={"pid": process.pid, "waited_s": waited})
                self._worker = None
                await self._retire(worker, grace=0.0)
                raise WorkerGone(f"scrape worker not up within {waited:g}s") from None
            return worker

    async def _read_answers(self, worker: _Worker) -> None:
        process = worker.process
        assert process.stdout is not None
        why = "scrape worker exited"
        try:
            while True:
                message = await read_frame(process.stdout)
                if message is None:
                    break
                request_id, result = message
                if request_id == READY:
                    if not worker.ready.done():
                        worker.ready.set_result(None)
                    continue
                future = worker.pending.get(request_id)
                if future is not None and not future.done():
                    future.set_result(result)
        except Exception as exc:  # a corrupt stream: end this worker, the next read restarts
            why = f"scrape worker protocol error: {type(exc).__name__}: {exc}"
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = await process.wait()
        if not worker.closing:
            log.error("scrape_worker_died", extra={"pid": process.pid, "returncode": code})
        if worker is self._worker:
            self._worker = None
        worker.fail_pending(f"{why} (code {code})")

    @staticmethod
    async def _retire(worker: _Worker, grace: float) -> None:
        worker.closing = True
        await _end(worker.process, grace)
        if worker.reader is not None:
            # The reader ends at EOF by itself; cancelling covers a stuck pipe.
            try:
                await asyncio.wait_for(asyncio.shield(worker.reader), 1.0)
            except (TimeoutError, asyncio.CancelledError):
                worker.reader.cancel()
                await asyncio.gather(worker.reader, return_exceptions=True)


async def _end(process: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    """Close the worker's stdin (it exits at EOF), kill it after `grace` s, reap it."""
    if process.stdin is not None:
        with contextlib.suppress(Exception):
            process.stdin.close()
    if grace > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
