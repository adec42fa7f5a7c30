"""What one delta node holds (name -> version), as a snapshot's resources plus its differences.

A delta stream must know the version of every resource its node has. With LEDS a node group
has hundreds of endpoint resources, and a thousand streams each keeping two full name ->
version dicts of them (what the node has, what it ACKed) cost serve ~50 MB, although nearly
every stream holds exactly what the snapshot holds. So a table here points at a snapshot's
own resource map, shared by every stream of the group and immutable, and keeps only where
the node differs from it (copy-on-write). Once a stream is level with a snapshot it moves
its table onto that snapshot's map (`rebase`) and the differences drop to nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from types import MappingProxyType

from heliostat.xds.resources.snapshot import Resource

Resources = Mapping[str, Resource]

EMPTY: Resources = MappingProxyType({})


class Versions(Mapping[str, str]):
    """name -> version: `base`'s resources' versions, overridden by this table's own entries
    (None in them: the node lacks a name the base has)."""

    __slots__ = ("_base", "_diff")

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._base: Resources = EMPTY
        self._diff: dict[str, str | None] = dict(initial) if initial else {}

    @property
    def base(self) -> Resources:
        return self._base

    @property
    def own_entries(self) -> int:
        """How many names this table keeps itself (what it costs beyond the shared base)."""
        return len(self._diff)

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        diff = self._diff
        if name in diff:
            version = diff[name]
            return default if version is None else version
        resource = self._base.get(name)
        return default if resource is None else resource.version

    def __getitem__(self, name: str) -> str:
        version = self.get(name)
        if version is None:
            raise KeyError(name)
        return version

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __setitem__(self, name: str, version: str) -> None:
        self._diff[name] = version

    def pop(self, name: str, default: str | None = None) -> str | None:
        version = self.get(name)
        if version is None:
            return default
        if name in self._base:
            self._diff[name] = None
        else:
            del self._diff[name]
        return version

    def update(self, items: Iterable[tuple[str, str]]) -> None:
        self._diff.update(items)

    def __iter__(self) -> Iterator[str]:
        diff = self._diff
        for name in self._base:
            if name not in diff:
                yield name
        for name, version in diff.items():
            if version is not None:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def as_dict(self) -> dict[str, str]:
        return {name: self[name] for name in self}

    def copy(self) -> Versions:
        """An independent table with the same content (the base is shared, never written)."""
        twin = Versions()
        twin._base = self._base
        twin._diff = dict(self._diff)
        return twin

    def rebase(self, base: Resources, moved: Collection[str]) -> None:
        """Point at `base` instead, keeping the same content. `moved` must name every name
        whose version differs between the current base and `base` (added, changed or gone:
        `heliostat.xds.cache.changes` works it out once for every stream), so the cost is
        that and this table's own entries, not the size of the maps. With the same base it
        drops the entries that merely repeat it."""
        if not self._diff and not moved:  # the same content under every name, none of its own
            self._base = base
            return
        own = self._diff
        old = self._base
        names = set(own)
        names.update(moved)
        diff: dict[str, str | None] = {}
        for name in names:  # `get` written out: this runs per stream and change
            if name in own:
                version = own[name]
            else:
                before = old.get(name)
                version = None if before is None else before.version
            resource = base.get(name)
            if version != (None if resource is None else resource.version):
                diff[name] = version
        self._base = base
        self._diff = diff

    def __repr__(self) -> str:
        return f"Versions({self.as_dict()!r})"
