"""ControlState.endpoints as columns (`state.EndpointStates`): it reads as the mapping of
(model, address) -> EndpointState it replaced, ticks leave the previous state untouched, and
`state_changes` (the journal's walk) finds what `state` moved as a key-by-key walk does."""

from __future__ import annotations

from heliostat.balance import compute
from heliostat.balance.state import EndpointState, EndpointStates, state_changes
from tests.balance.helpers import MODEL, T0, Signals, addresses, policy_of, signal

POLICY = policy_of({"us-east": 3, "eu-west": 2, "ap-southeast": 1}, extra_model=True)
ADDRESSES = addresses(POLICY)


def _signals(now: float, kv: float = 0.3, silent: frozenset[str] = frozenset()) -> Signals:
    return {(MODEL, a): signal(a, waiting=1.0, kv=kv, at=now) for a in ADDRESSES if a not in silent}


def _naive(
    now: dict[tuple[str, str], EndpointState], before: dict[tuple[str, str], EndpointState]
) -> list[tuple[tuple[str, str], str, str]]:
    return [
        (key, before[key].state, state.state)
        for key, state in sorted(now.items())
        if key in before and before[key].state != state.state
    ]


def test_the_columns_read_as_the_mapping_of_every_endpoint() -> None:
    _, state = compute(POLICY, _signals(T0), None, T0)
    _, state = compute(POLICY, _signals(T0 + 2), state, T0 + 2)
    endpoints = state.endpoints
    assert isinstance(endpoints, EndpointStates)
    keys = [(m.name, e.address) for m in POLICY.spec.models for e in m.endpoints]
    assert list(endpoints) == keys
    assert len(endpoints) == len(keys)
    copied = dict(endpoints.items())
    assert list(copied) == keys and copied == endpoints
    for key in keys:
        assert key in endpoints
        assert endpoints[key] == copied[key] == endpoints.get(key)
    own = endpoints[(MODEL, ADDRESSES[0])]
    assert own.scraped_at == T0 + 2 and own.waiting == 1.0 and own.state == "healthy"
    for missing in [(MODEL, "10.9.9.9:8000"), ("nobody", ADDRESSES[0]), "junk", (MODEL,)]:
        assert missing not in endpoints
        assert endpoints.get(missing) is None  # type: ignore[call-overload]


def test_a_tick_leaves_the_previous_state_as_it_was() -> None:
    _, first = compute(POLICY, _signals(T0), None, T0)
    _, second = compute(POLICY, _signals(T0 + 2), first, T0 + 2)
    before = dict(second.endpoints)
    _, third = compute(POLICY, _signals(T0 + 4, kv=0.95), second, T0 + 4)
    assert dict(second.endpoints) == before
    assert all(s.scraped_at == T0 + 2 for k, s in second.endpoints.items() if k[0] == MODEL)
    assert all(s.scraped_at == T0 + 4 for k, s in third.endpoints.items() if k[0] == MODEL)


def test_state_changes_finds_what_a_key_by_key_walk_finds() -> None:
    _, a = compute(POLICY, _signals(T0), None, T0)
    _, b = compute(POLICY, _signals(T0 + 2), a, T0 + 2)
    silent = frozenset(ADDRESSES[::2])
    _, c = compute(POLICY, _signals(T0 + 12, kv=2.5, silent=silent), b, T0 + 12)
    found = [(k, old.state, new.state) for k, old, new in state_changes(c.endpoints, b.endpoints)]
    expected = _naive(dict(c.endpoints), dict(b.endpoints))
    assert found == expected
    assert {new for _, _, new in found} == {"stale", "saturated"}
    assert state_changes(c.endpoints, c.endpoints) == []
    # Across a new policy (new columns) and from a plain mapping, the same answer.
    again = policy_of({"us-east": 3, "eu-west": 2, "ap-southeast": 1}, extra_model=True)
    _, d = compute(again, _signals(T0 + 14), c, T0 + 14)
    expected = _naive(dict(d.endpoints), dict(c.endpoints))
    assert expected
    for before in (c.endpoints, dict(c.endpoints)):
        changes = state_changes(d.endpoints, before)
        assert [(k, old.state, new.state) for k, old, new in changes] == expected
