"""YAML with line numbers: every value remembers where it was written.

pydantic reports a problem by its path (`spec.models[0].endpoints[2].region`); operators need
`FILE:LINE`. Building plain Python data straight from the parser's events gives us the data
and a path -> line table in one pass, and lets us refuse what PyYAML silently accepts
(duplicate keys) or cannot survive:

- aliases are shared, never copied, so nine levels of anchors ("billion laughs") cost nine
  objects, not 9^9; their expanded size and their number are still capped, because whoever
  reads the data afterwards (pydantic) walks every use of an alias;
- nesting depth is capped, and the walk is iterative, so 100,000 `[` is a located error, not
  a RecursionError;
- a syntax error names the unclosed bracket it happened in, not just where the parser gave up.

The parser is libyaml's when PyYAML was built with it (about 20 times faster than the pure
Python one on large fleets); scalars are resolved exactly as `yaml.safe_load` would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import GeneratorType
from typing import Any

import yaml

Path = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NO_KEY = object()


@dataclass(frozen=True)
class YamlLimits:
    """What one policy document may cost to read. Far beyond any written or generated policy
    (the schema nests 7 levels deep; a 4 MiB file holds under a million values), far below
    what would hurt the process that reads it."""

    max_depth: int = 32
    max_aliases: int = 1_000
    max_values: int = 1_000_000


DEFAULT_LIMITS = YamlLimits()


@dataclass(frozen=True)
class Located:
    """Plain data plus the line of every path in it (1-based).

    Values reached through an alias share one object with the anchor and have no lines of
    their own: a problem inside them is located at the alias.
    """

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
    """A document heliostat cannot read: not YAML, or beyond `YamlLimits`; with its line and,
    when known, the path of the value at fault."""

    def __init__(self, line: int, message: str, path: Path = ()) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.path = path


@dataclass(frozen=True, slots=True)
class _Anchor:
    value: Any
    size: int  # values once every alias inside is expanded, itself included
    height: int  # levels of collections it spans (0 for a scalar)


@dataclass(slots=True)
class _Frame:
    """A collection being built."""

    container: Any  # dict or list
    path: Path | None  # None inside a key that is itself a collection (refused when done)
    line: int
    flow: bool
    anchor: str | None
    key: Any = _NO_KEY
    key_line: int = 0
    size: int = 1
    height: int = 1


@dataclass
class _Builder:
    limits: YamlLimits
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int]] = field(default_factory=list)
    stack: list[_Frame] = field(default_factory=list)
    anchors: dict[str, _Anchor] = field(default_factory=dict)
    aliases: int = 0
    values: int = 0
    root: Any = None
    documents: int = 0
    # SafeLoader resolves and constructs scalars (int, bool, null, float, timestamps) exactly
    # as yaml.safe_load would; its parser is never used.
    scalars: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))
    constructed: dict[tuple[str, str], Any] = field(default_factory=dict)

    def resolve(self, value: str, implicit: tuple[bool, bool] | None) -> str:
        """The tag yaml.safe_load gives a scalar written without one."""
        resolve: Callable[..., str] = self.scalars.resolve
        return resolve(yaml.ScalarNode, value, implicit)

    # -- events --------------------------------------------------------------------------

    def feed(self, events: Iterator[yaml.Event]) -> None:
        for event in events:
            if isinstance(event, yaml.ScalarEvent):
                self.scalar(event)
            elif isinstance(event, yaml.MappingStartEvent):
                self.start(event, {})
            elif isinstance(event, yaml.SequenceStartEvent):
                self.start(event, [])
            elif isinstance(event, yaml.CollectionEndEvent):
                self.end()
            elif isinstance(event, yaml.AliasEvent):
                self.alias(event)
            elif isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    raise YamlSyntaxError(
                        _line(event),
                        "expected one YAML document per policy file, found several",
                    )

    def scalar(self, event: yaml.ScalarEvent) -> None:
        line = _line(event)
        path = self.value_path(line)
        self.count(1, line, path)
        value = self.construct(event, line, path if path is not None else self.near())
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, 1, 0)
        self.deliver(value, line, 1, 0)

    def start(self, event: yaml.CollectionStartEvent, container: Any) -> None:
        line = _line(event)
        path = self.value_path(line)
        if len(self.stack) + 1 > self.limits.max_depth:
            raise YamlSyntaxError(
                line,
                f"nested deeper than {self.limits.max_depth} levels; a policy needs far fewer",
                path or (),
            )
        self.count(1, line, path)
        flow = bool(event.flow_style)
        self.stack.append(_Frame(container, path, line, flow, event.anchor))

    def end(self) -> None:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchor(frame.container, frame.size, frame.height)
        self.deliver(frame.container, frame.line, frame.size, frame.height)

    def alias(self, event: yaml.AliasEvent) -> None:
        line = _line(event)
        path = self.value_path(line)
        name = event.anchor or ""
        anchor = self.anchors.get(name)
        if anchor is None:
            inside = any(frame.anchor == name for frame in self.stack)
            reason = "refers to a value that contains it" if inside else "has no anchor before it"
            raise YamlSyntaxError(line, f"alias *{name} {reason}", path or ())
        self.aliases += 1
        if self.aliases > self.limits.max_aliases:
            raise YamlSyntaxError(
                line,
                f"more than {self.limits.max_aliases} aliases; write the values out",
                path or (),
            )
        if len(self.stack) + anchor.height > self.limits.max_depth:
            raise YamlSyntaxError(
                line,
                f"alias *{name} nests values deeper than {self.limits.max_depth} levels",
                path or (),
            )
        self.count(anchor.size, line, path)
        self.deliver(anchor.value, line, anchor.size, anchor.height)

    # -- building ------------------------------------------------------------------------

    def near(self) -> Path:
        """The path of the innermost collection with one, for problems in keys."""
        for frame in reversed(self.stack):
            if frame.path is not None:
                return frame.path
        return ()

    def value_path(self, line: int) -> Path | None:
        """The path of the value starting now, its line recorded (None inside a key)."""
        if not self.stack:
            self.lines.setdefault((), line)
            return ()
        top = self.stack[-1]
        if top.path is None:
            return None
        if type(top.container) is dict:
            # A value's line is its key's, recorded with the key; a key has no path.
            return None if top.key is _NO_KEY else (*top.path, top.key)
        path = (*top.path, len(top.container))
        self.lines.setdefault(path, line)
        return path

    def deliver(self, value: Any, line: int, size: int, height: int) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        if height >= top.height:
            top.height = height + 1
        container = top.container
        if type(container) is list:
            container.append(value)
        elif top.key is _NO_KEY:
            self.key(top, value, line)
        else:
            container[top.key] = value
            top.key = _NO_KEY

    def key(self, top: _Frame, key: Any, line: int) -> None:
        if isinstance(key, dict | list):
            raise YamlSyntaxError(line, "a mapping or a list cannot be a key", top.path or ())
        top.key = key
        top.key_line = line
        if top.path is None:
            return
        path = (*top.path, key)
        if key in top.container:
            self.duplicates.append((path, line))
        self.lines[path] = line

    def construct(self, event: yaml.ScalarEvent, line: int, path: Path) -> Any:
        value: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(value, event.implicit)
        if tag == _STR_TAG:
            return value
        cached = self.constructed.get((tag, value), _NO_KEY)
        if cached is not _NO_KEY:
            return cached
        if tag == _MERGE_TAG:
            raise YamlSyntaxError(
                line, "merge keys (<<) are not supported: write the keys out", path
            )
        constructor = self.scalars.yaml_constructors.get(tag)
        if constructor is None:
            raise YamlSyntaxError(line, f"unknown tag {tag!r}", path)
        node = yaml.ScalarNode(tag, value, style=event.style)
        try:
            result = constructor(self.scalars, node)
        except (yaml.YAMLError, ValueError, TypeError, ArithmeticError) as exc:
            raise YamlSyntaxError(
                line, f"cannot read {_short(value)} as {tag}: {exc}", path
            ) from None
        if isinstance(result, GeneratorType):  # a collection tag on a scalar
            result.close()
            raise YamlSyntaxError(line, f"tag {tag!r} does not apply to a scalar", path)
        self.constructed[(tag, value)] = result
        return result

    def count(self, values: int, line: int, path: Path | None) -> None:
        self.values += values
        if self.values > self.limits.max_values:
            raise YamlSyntaxError(
                line,
                f"the document holds more than {self.limits.max_values:,} values "
                "(counting every use of an alias)",
                path or (),
            )

    def open_bracket(self) -> tuple[str, int] | None:
        """The innermost flow collection still open, as ('[' or '{', line)."""
        for frame in reversed(self.stack):
            if frame.flow:
                return ("{" if type(frame.container) is dict else "["), frame.line
        return None


def load_located(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> Located:
    """Parse one YAML document into data with line numbers."""
    builder = _Builder(limits)
    try:
        builder.feed(yaml.parse(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, builder, text) from None
    except yaml.YAMLError as exc:  # a character YAML does not allow (ReaderError)
        raise YamlSyntaxError(_reader_line(exc, text), f"invalid YAML: {exc}") from None
    if builder.documents == 0:
        raise YamlSyntaxError(1, "the file is empty: expected one InferencePolicy document")
    return Located(builder.root, builder.lines, tuple(builder.duplicates))


_LOADER: type[Any] = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else 1


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:37] + "...")


def _syntax_error(exc: yaml.MarkedYAMLError, builder: _Builder, text: str) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    problem = exc.problem or exc.context or "cannot parse"
    if "maximum nesting depth" in problem:  # libyaml's own cap, met while scanning ahead
        problem = f"nested deeper than {builder.limits.max_depth} levels; a policy needs far fewer"
    message = f"invalid YAML: {problem}"
    if line <= text.count("\n") + 1 and "\t" in _line_text(text, line) and "token" in message:
        message += " (a tab: YAML indents with spaces)"
    bracket = builder.open_bracket()
    if bracket is not None and bracket[1] < line:
        message += f"; the '{bracket[0]}' opened at line {bracket[1]} is not closed"
    elif exc.context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        message += f" ({exc.context}, which starts at line {exc.context_mark.line + 1})"
    return YamlSyntaxError(line, message)


def _line_text(text: str, line: int) -> str:
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)]


def _reader_line(exc: yaml.YAMLError, text: str) -> int:
    position = getattr(exc, "position", None)
    if not isinstance(position, int) or position < 0:
        return 1
    return text.count("\n", 0, min(position, len(text))) + 1
