"""The OpenAI wire format: parsing request bodies and shaping responses, free of HTTP.

Accepted body fields (unknown fields are ignored, as vLLM does):

``model``
    must name the replica's model (404 otherwise); may be omitted.
``prompt`` (completions)
    a string, a list of token ids, or a one-element list of either.
``messages`` (chat)
    OpenAI messages; string content or a list of ``{"type": "text", "text": ...}`` parts.
``max_tokens`` / ``max_completion_tokens`` (chat prefers the latter)
    the exact number of tokens generated (the simulator never stops early); default 16.
``stream``, ``stream_options.include_usage``
    as in OpenAI: SSE chunks, optionally a final usage chunk, then ``data: [DONE]``.
``prompt_tokens`` (simulator extension)
    force the prompt length in tokens: the text's tokens are truncated or padded with filler
    derived from the text.
``prefix_id`` + ``prefix_tokens`` (simulator extension)
    prepend ``prefix_tokens`` synthetic tokens determined by ``prefix_id``: requests naming the
    same id share that prefix in the prefix cache, without sending its text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from heliostat.sim.tokens import build_prompt

DEFAULT_MAX_TOKENS = 16


class BadRequest(ValueError):
    """A body the OpenAI API would refuse with 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    chat: bool
    model: str | None
    prompt: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool


def error_body(
    message: str, *, type_: str, code: int | str, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _int_field(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}", name)
    return value


def _message_text(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    parts: list[str] = []
    for msg in messages:
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str):
            raise BadRequest("each message needs a string role", "messages")
        content = msg.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        else:
            raise BadRequest("message content must be a string or a list of parts", "messages")
        # A stand-in for a chat template: role markers cost tokens, and equal leading messages
        # still render to an equal leading text (so a shared system prompt is a shared prefix).
        parts.append(f"<|{msg['role']}|>\n{text}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def _prompt_source(prompt: Any) -> str | list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        return list(prompt)
    raise BadRequest(
        "prompt must be a string or a list of token ids (batches are not simulated)", "prompt"
    )


def parse_generation(body: Any, *, chat: bool) -> GenerationRequest:
    """Validate a completions or chat body into what the engine needs."""
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string", "model")
    source: str | list[int]
    if chat:
        source = _message_text(body.get("messages"))
        max_tokens = _int_field(body, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _int_field(body, "max_tokens", 1)
    else:
        if "prompt" not in body:
            raise BadRequest("prompt is required", "prompt")
        source = _prompt_source(body["prompt"])
        max_tokens = _int_field(body, "max_tokens", 1)
    prompt_tokens = _int_field(body, "prompt_tokens", 1)
    prefix_tokens = _int_field(body, "prefix_tokens", 0) or 0
    prefix_id = body.get("prefix_id")
    if prefix_id is not None and not isinstance(prefix_id, str):
        raise BadRequest("prefix_id must be a string", "prefix_id")
    tokens = build_prompt(
        source, prompt_tokens=prompt_tokens, prefix_id=prefix_id, prefix_tokens=prefix_tokens
    )
    if not tokens:
        raise BadRequest("prompt must not be empty", "prompt")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
    return GenerationRequest(
        chat=chat,
        model=model,
        prompt=tokens,
        max_tokens=max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        stream=stream,
        include_usage=include_usage,
    )


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class ResponseShaper:
    """Builds the response objects of one request, full or as stream chunks."""

    def __init__(self, *, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self._chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def full(self, text: str, use: dict[str, Any]) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
            }
            out = self._envelope("chat.completion", [choice])
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
            out = self._envelope("text_completion", [choice])
        out["usage"] = use
        return out

    def role_chunk(self) -> dict[str, Any] | None:
        """Chat streams open with an empty assistant delta; completions have no such chunk."""
        if not self.chat:
            return None
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return self._envelope(self._chunk_object, [choice])

    def chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self.chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
            choice["stop_reason"] = None
        return self._envelope(self._chunk_object, [choice])

    def usage_chunk(self, use: dict[str, Any]) -> dict[str, Any]:
        out = self._envelope(self._chunk_object, [])
        out["usage"] = use
        return out
