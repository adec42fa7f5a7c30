"""The overhead benchmark: its instant upstream's request framing, and a smoke test at tiny
size (instant upstream, a static Envoy, heliostat serve and the Envoy it configures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import overhead
from bench.overhead_upstream import _Incomplete, _parse


def test_the_upstream_frames_content_length_and_chunked_bodies_and_waits_for_the_rest() -> None:
    plain = b"POST /v1/completions HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
    chunked = (
        b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    closing = b"GET /metrics HTTP/1.1\r\nconnection: close\r\n\r\n"

    assert _parse(bytearray(plain + b"GET")) == (len(plain), b"POST", b"/v1/completions", True)
    assert _parse(bytearray(chunked))[0] == len(chunked)
    assert _parse(bytearray(closing))[3] is False
    for partial in (plain[:-1], chunked[:-2], closing[:-2]):
        with pytest.raises(_Incomplete):
            _parse(bytearray(partial))
    with pytest.raises(ValueError):
        _parse(bytearray(b"nonsense\r\n\r\n"))


@pytest.mark.envoy
def test_overhead_reports_both_envoys_percentiles_at_tiny_size(tmp_path: Path) -> None:
    result = overhead.run("tiny", tmp_path)

    fields = ("bare_p50_ms", "bare_p99_ms", "heliostat_p50_ms", "heliostat_p99_ms")
    for field in fields:
        value = result[field]
        assert isinstance(value, int | float) and not isinstance(value, bool), field
    assert result["bare_p99_ms"] >= result["bare_p50_ms"] > 0
    assert result["heliostat_p99_ms"] >= result["heliostat_p50_ms"] > 0
    count = overhead.PLANS["tiny"].sequential
    for path in overhead.PATHS:
        figures = result["sequential"][path]
        assert figures["requests"] == count
        assert figures["errors"] == 0, path
    # the gateway really was configured by heliostat: its body filter is in the chain
    assert "envoy.filters.http.json_to_metadata" in result["heliostat_http_filters"]
    assert result["notes"]
    json.dumps(result)
    assert "heliostat" in overhead.summary(result)
