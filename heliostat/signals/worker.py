"""The scrape worker process: `python -m heliostat.signals.worker`.

Reads requests from stdin and writes answers to stdout in the framed protocol of
`signals.offload`, running each request concurrently with a `LocalFetcher`. Exits when stdin
closes (the serving process closed it, or died). Logs go to stderr, which it shares with
the serving process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from heliostat.signals.offload import READY, LocalFetcher, encode, read_frame

log = logging.getLogger("heliostat.signals.worker")


async def serve(reader: asyncio.StreamReader, write: Any) -> None:
    """Answer requests from `reader` with `write(frame bytes)` until EOF."""
    fetcher = LocalFetcher()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            result = await fetcher.serve(method, args)
        except Exception:  # the fetchers never raise; a bad request is the server's bug
            log.exception("scrape_worker_request_failed", extra={"method": method})
            return  # the caller's own deadline turns the silence into a failure
        write(encode((request_id, result)))

    try:
        while True:
            message = await read_frame(reader)
            if message is None:
                break
            request_id, method, args = message
            task = asyncio.create_task(answer(request_id, method, args))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fetcher.close()


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    transport.write(encode((READY, None)))
    try:
        await serve(reader, transport.write)
    finally:
        transport.close()


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the serving process decides when
    # this one ends (by closing stdin), so the worker ignores SIGINT and SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    asyncio.run(_main())


if __name__ == "__main__":
    main()
