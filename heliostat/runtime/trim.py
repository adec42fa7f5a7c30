"""Give freed heap back to the operating system once a wave of streams has left.

A wave of Envoys reconnecting (a gateway fleet restarted, a network blip, a churn of
short-lived sidecars) allocates per stream: protocol state, serialised responses in
flight, gRPC's own buffers. Once the wave has left, that memory is free but glibc keeps
most of it: its arenas are only returned when their top is free, and the streams'
allocations are scattered among the long-lived ones. Measured with the churn test's load
(1,000 streams, ~13,000 connects per 30 s round, `tests/churn`): serve's RSS read 10-20 MB
above what `malloc_trim(0)` brings it to, and that margin varied from round to round by
as much, so a reading after a wave said more about the allocator's luck than about what
serve still held. An operator watching serve's memory after a reconnect storm sees the
same.

So once the open streams have fallen well below their peak, serve runs a full garbage
collection (streams that lived long died in the oldest generation, which
`heap.OldestGeneration` otherwise collects only once a minute) and then `malloc_trim(0)`,
at most once every `SPACING_S`. It costs one full collection and one walk of the heap per
wave (a few milliseconds at 1,000 streams), nothing while streams stay.

What it cannot give back is memory that is still referenced. grpcio's asyncio layer leaks
a small native array whenever a batch on a call fails or its awaiting task is cancelled
(grpc/grpc#43360, open in grpcio 1.85.4): every stream a client cancels has a read in
flight, so each costs ~50 bytes in a bare grpc.aio server and ~125 bytes in serve
(measured: RSS after a trim grew ~1.6 MB per 13,000 cancelled streams, steadily over
180,000). That is ~3 MB per 27,000 reconnects, far below what a leak of heliostat's own
would show, and it goes when grpcio's fix lands.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from heliostat.runtime import heap

log = structlog.get_logger("heliostat.trim")

SPACING_S = 10.0  # at most one trim this often
WAVE_MIN = 100  # a wave is at least this many streams gone since the peak ...
WAVE_SHARE = 0.25  # ... and at least this share of the peak
POLL_S = 1.0


def malloc_trim() -> Callable[[], None] | None:
    """glibc's `malloc_trim(0)`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class WaveTrim:
    """Decides when a wave of streams has left, and then collects and trims."""

    def __init__(
        self,
        trim: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        spacing_s: float = SPACING_S,
        wave_min: int = WAVE_MIN,
        wave_share: float = WAVE_SHARE,
    ) -> None:
        self._trim = trim
        self._clock = clock
        self._spacing_s = spacing_s
        self._wave_min = wave_min
        self._wave_share = wave_share
        self._peak = 0
        self._last = float("-inf")

    def tend(self, open_streams: int) -> bool:
        """Look at the open streams now; True when a trim ran."""
        self._peak = max(self._peak, open_streams)
        gone = self._peak - open_streams
        if gone < max(self._wave_min, self._wave_share * self._peak):
            return False
        now = self._clock()
        if now - self._last < self._spacing_s:
            return False
        heap.collect_all()  # what a large tick froze too (`heap.ticking`)
        self._trim()
        self._last = now
        self._peak = open_streams
        return True


async def run(open_streams: Callable[[], int], trimmer: WaveTrim, every_s: float = POLL_S) -> None:
    """Look at the open streams every `every_s` until cancelled; log what each trim gave."""
    while True:
        await asyncio.sleep(every_s)
        before = _rss_mb()
        streams = open_streams()
        if trimmer.tend(streams):
            log.info("heap_trimmed", streams=streams, rss_mb_before=before, rss_mb=_rss_mb())


def _rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
