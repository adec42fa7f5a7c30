"""Deterministic fake tokenization, so equal text prefixes give equal prefix-cache blocks.

A real tokenizer is neither needed nor wanted: the simulator only has to agree with itself about
(a) how many tokens a prompt costs and (b) which prompts share a block-aligned prefix. Cutting the
text into 4-character chunks (about the English average for BPE vocabularies) gives both, and a
CRC of each chunk turns it into a stable token id that does not depend on ``PYTHONHASHSEED``.

Benchmarks that want exact lengths without sending megabytes of text can ask for synthetic tokens:
a named shared prefix (``prefix_id`` + ``prefix_tokens``) and an exact total (``prompt_tokens``);
see :func:`build_prompt`.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence

CHARS_PER_TOKEN = 4
"""Characters per simulated token, for both prompts and generated text."""

_ROOT_HASH = 0x5EED_B10C
"""Parent of the first block in every hash chain."""

# Four-character words, so generated text re-tokenizes to exactly the number of tokens produced.
_VOCAB: tuple[str, ...] = (
    " sun",
    " sky",
    " sea",
    " map",
    " ray",
    " arc",
    " fog",
    " dew",
    " ice",
    " orb",
    " gem",
    " oak",
    " elm",
    " ash",
    " bay",
    " elk",
)


def count_text_tokens(text: str) -> int:
    """Tokens a text costs: one per started 4-character chunk."""
    return -(-len(text) // CHARS_PER_TOKEN)


def tokenize(text: str) -> list[int]:
    """Token ids of a text: the CRC32 of each 4-character chunk."""
    return [
        zlib.crc32(text[i : i + CHARS_PER_TOKEN].encode("utf-8"))
        for i in range(0, len(text), CHARS_PER_TOKEN)
    ]


def synthetic_tokens(kind: str, name: str, count: int) -> list[int]:
    """``count`` token ids that depend only on (kind, name): the same name always gives the same
    sequence, so two requests naming the same shared prefix hit the same cached blocks.

    One SHAKE-128 stream yields them all in a single C call, which matters when every request of
    a benchmark carries a 6,000-token synthetic prefix.
    """
    if count <= 0:
        return []
    stream = hashlib.shake_128(f"{kind}\0{name}".encode()).digest(4 * count)
    return memoryview(stream).cast("I").tolist()


def build_prompt(
    text: str | Sequence[int],
    *,
    prompt_tokens: int | None = None,
    prefix_id: str | None = None,
    prefix_tokens: int = 0,
) -> list[int]:
    """The token sequence of a prompt.

    ``text`` is tokenized (or, when it is already a list of token ids, used as is). A named
    synthetic prefix of ``prefix_tokens`` tokens goes in front, so requests of one group share it
    whatever their text. ``prompt_tokens`` then fixes the total length: the sequence is truncated,
    or padded with filler derived from the text, so equal requests stay equal and different ones
    diverge right after their common part.
    """
    body = list(text) if not isinstance(text, str) else tokenize(text)
    tokens = synthetic_tokens("prefix", prefix_id, prefix_tokens) if prefix_id else []
    tokens.extend(body)
    if prompt_tokens is not None:
        if prompt_tokens < len(tokens):
            del tokens[prompt_tokens:]
        elif prompt_tokens > len(tokens):
            key = text if isinstance(text, str) else ",".join(map(str, text))
            filler = synthetic_tokens("pad", f"{prefix_id}\0{key}", prompt_tokens - len(tokens))
            tokens.extend(filler)
    return tokens


def block_hashes(tokens: Sequence[int], block_size: int) -> list[int]:
    """Hash chain over the full ``block_size`` chunks of a token sequence.

    Each hash covers its block and, through its parent, everything before it, so a hit on block i
    implies the whole prefix up to i matches (the property vLLM's prefix cache relies on). The
    trailing partial block is never cached, as in vLLM.
    """
    hashes: list[int] = []
    parent = _ROOT_HASH
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, tuple(tokens[start : start + block_size])))
        hashes.append(parent)
    return hashes


def output_text(count: int, *, start: int = 0, seed: int = 0) -> str:
    """Generated text of ``count`` tokens, 4 characters each."""
    return "".join(_VOCAB[(seed + i) % len(_VOCAB)] for i in range(start, start + count))


def output_token(index: int, *, seed: int = 0) -> str:
    """The text of generated token ``index``."""
    return _VOCAB[(seed + index) % len(_VOCAB)]
