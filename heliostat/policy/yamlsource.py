"""YAML with line numbers: every value remembers where it was written.

pydantic reports a problem by its path (`spec.models[0].endpoints[2].region`); operators need
`FILE:LINE`. Composing the YAML node tree ourselves lets us build plain Python data and a
path -> line table in one walk, and catch what PyYAML silently accepts (duplicate keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """Plain data plus the line of every path in it (1-based)."""

    data: Any
    lines: Mapping[Path, int]
    duplicate_keys: tuple[tuple[Path, int], ...] = ()

    def line_of(self, path: Path) -> int:
        """The line of the deepest written ancestor of `path` (unknown keys have none)."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)


class YamlSyntaxError(ValueError):
    """A document that is not YAML at all, with the line where parsing stopped."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class _Walk:
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int]] = field(default_factory=list)
    # SafeLoader resolves scalar tags (int, bool, null, float) exactly as yaml.safe_load would.
    scalars: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build_scalar_key(key_node)
                child: Path = (*path, key)
                if key in result:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                self.lines[child] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.scalars.construct_object(node, deep=True)

    def build_scalar_key(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.scalars.construct_object(node, deep=True)
        return yaml.serialize(node).strip()


def load_located(text: str) -> Located:
    """Parse one YAML document into data with line numbers."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, f"invalid YAML: {exc}") from None
    documents = [node for node in nodes if node is not None]
    if not documents:
        raise YamlSyntaxError(1, "the file is empty: expected one InferencePolicy document")
    if len(documents) > 1:
        line = documents[1].start_mark.line + 1
        raise YamlSyntaxError(line, "expected one YAML document per policy file, found several")
    walk = _Walk()
    data = walk.build(documents[0], ())
    return Located(data, walk.lines, tuple(walk.duplicates))
