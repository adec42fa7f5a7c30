"""The load generator's first-token rule: TTFT is the first line that brings text."""

from __future__ import annotations

import json

from heliostat.sim.loadgen import carries_token


def _data(chunk: object) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n"


def test_chat_role_chunk_is_not_a_token() -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    token = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    assert not carries_token(_data(role))
    assert carries_token(_data(token))


def test_completion_text_chunks_count_and_empty_ones_do_not() -> None:
    assert carries_token(_data({"choices": [{"index": 0, "text": "lo"}]}))
    assert not carries_token(_data({"choices": [{"index": 0, "text": ""}]}))


def test_done_comments_and_non_json_payloads() -> None:
    assert not carries_token(b"data: [DONE]\n")
    assert not carries_token(b": keep-alive\n")
    assert not carries_token(b"\n")
    assert carries_token(b"data: plain text event\n")
    assert carries_token(_data({"index": 0, "t": 1.0}))  # a non-OpenAI stream (test upstreams)
