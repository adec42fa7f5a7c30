"""When serve gives freed heap back: once a wave of streams has left, not while they stay."""

from __future__ import annotations

import asyncio

from heliostat.runtime.trim import WaveTrim, malloc_trim, run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def trimmer(clock: Clock) -> tuple[WaveTrim, list[float]]:
    trims: list[float] = []
    return WaveTrim(lambda: trims.append(clock.now), clock, spacing_s=10), trims


def test_a_wave_that_left_is_trimmed_once() -> None:
    clock = Clock()
    wave, trims = trimmer(clock)
    for open_streams in (10, 500, 1000, 990, 1000):  # connecting, then steady
        assert not wave.tend(open_streams)
    assert wave.tend(0)  # the wave left
    clock.now += 1
    assert not wave.tend(0)  # nothing more left since
    assert trims == [0.0]


def test_churn_below_the_wave_size_is_left_alone() -> None:
    clock = Clock()
    wave, trims = trimmer(clock)
    for open_streams in (1000, 920, 980, 900, 1000, 930):  # a quarter of 1,000 never left
        clock.now += 1
        assert not wave.tend(open_streams)
    assert trims == []


def test_a_small_fleet_needs_the_minimum_wave() -> None:
    clock = Clock()
    wave, trims = trimmer(clock)
    wave.tend(60)
    assert not wave.tend(0)  # 60 streams gone: below WAVE_MIN (100)
    assert trims == []


def test_waves_closer_than_the_spacing_wait() -> None:
    clock = Clock()
    wave, trims = trimmer(clock)
    wave.tend(1000)
    assert wave.tend(0)
    clock.now += 3
    wave.tend(1000)
    assert not wave.tend(0)  # 3 s after the last trim
    clock.now += 10
    assert wave.tend(0)  # the peak was kept: the second wave is trimmed once allowed
    assert trims == [0.0, 13.0]


def test_glibc_trim_is_found_and_callable() -> None:
    release = malloc_trim()
    assert release is not None  # the CI image and every supported Linux run glibc
    release()


async def test_the_loop_trims_once_the_streams_are_gone() -> None:
    clock = Clock()
    wave, trims = trimmer(clock)
    streams = [1000]
    task = asyncio.create_task(run(lambda: streams[0], wave, every_s=0.01))
    try:
        await asyncio.sleep(0.05)
        assert trims == []
        streams[0] = 0
        for _ in range(100):
            await asyncio.sleep(0.01)
            if trims:
                break
        assert trims == [0.0]
    finally:
        task.cancel()
