"""Fake tokenization: stable, about 4 characters a token, shared prefixes share blocks."""

from __future__ import annotations

from heliostat.sim.tokens import (
    block_hashes,
    build_prompt,
    count_text_tokens,
    output_text,
    tokenize,
)


def test_four_characters_per_token() -> None:
    assert count_text_tokens("") == 0
    assert count_text_tokens("abcd") == 1
    assert count_text_tokens("abcde") == 2
    assert len(tokenize("x" * 4001)) == 1001


def test_tokens_are_deterministic() -> None:
    assert tokenize("the same text") == tokenize("the same text")
    assert tokenize("the same text") != tokenize("the other text")


def test_shared_text_prefix_shares_block_hashes() -> None:
    system = "You are a helpful assistant. " * 40  # 1160 chars = 290 tokens
    a = block_hashes(tokenize(system + "What is the sun? " * 10), 16)
    b = block_hashes(tokenize(system + "Why is the sky so blue? " * 10), 16)
    shared = 290 // 16  # 18 full blocks of system prompt; block 18 mixes in the question
    assert a[:shared] == b[:shared]
    assert all(x != y for x, y in zip(a[shared:], b[shared:], strict=False))


def test_hash_chain_depends_on_everything_before() -> None:
    a = block_hashes(list(range(64)), 16)
    b = block_hashes([99, *range(1, 64)], 16)
    assert len(a) == 4
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_partial_block_is_not_hashed() -> None:
    assert len(block_hashes(list(range(31)), 16)) == 1


def test_prompt_tokens_pads_and_truncates() -> None:
    assert len(build_prompt("short", prompt_tokens=500)) == 500
    assert build_prompt("short", prompt_tokens=500) == build_prompt("short", prompt_tokens=500)
    assert build_prompt("a" * 400, prompt_tokens=10) == tokenize("a" * 400)[:10]


def test_named_prefix_is_shared_across_texts() -> None:
    a = build_prompt("question one", prefix_id="group-1", prefix_tokens=300)
    b = build_prompt("question two", prefix_id="group-1", prefix_tokens=300)
    c = build_prompt("question one", prefix_id="group-2", prefix_tokens=300)
    assert a[:300] == b[:300]
    assert a[300:] != b[300:]
    assert a[:300] != c[:300]
    assert len(a) == 300 + count_text_tokens("question one")


def test_token_id_prompts_are_used_verbatim() -> None:
    assert build_prompt([5, 6, 7]) == [5, 6, 7]


def test_output_text_has_four_chars_per_token() -> None:
    text = output_text(25)
    assert len(text) == 100
    assert count_text_tokens(text) == 25
