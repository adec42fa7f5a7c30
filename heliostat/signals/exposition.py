"""Prometheus exposition text -> an index of the few samples heliostat reads.

A vLLM `/metrics` page is tens of kilobytes of histograms we never look at, and
prometheus_client's parser is pure Python. Parsing every line of every endpoint each interval
would cost milliseconds per endpoint, so we first keep only the sample lines of the wanted
metric names (one C-level regex pass) and parse those with one strict regular expression per
line (the OpenMetrics format still goes through prometheus_client's parser).
A second regex pass still checks every other line looks like exposition, so an HTML error page
or binary garbage served as text/plain is reported as `parse` rather than as missing series.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

Labels = Mapping[str, str]


class ExpositionError(ValueError):
    """The text is not valid exposition format."""


@dataclass(frozen=True, slots=True)
class SampleIndex:
    """Samples by sample name (`vllm:prefix_cache_queries_total`, not the family name).

    Indexing by sample name makes counters look the same whether or not the server sent
    `# TYPE` lines (the parser strips `_total` from counter family names only when typed).
    Each entry is a list of (labels, value).
    """

    samples: Mapping[str, list[tuple[Labels, float]]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def from_samples(cls, samples: Iterable[tuple[str, Labels, float]]) -> SampleIndex:
        index: dict[str, list[tuple[Labels, float]]] = {}
        for name, labels, value in samples:
            index.setdefault(name, []).append((labels, value))
        return cls(MappingProxyType(index))

    def get(self, name: str) -> list[tuple[Labels, float]]:
        return self.samples.get(name, [])

    def __contains__(self, name: object) -> bool:
        return name in self.samples


# A line that is neither blank, a comment, nor starts with a metric name followed by `{` or a
# blank. The parser would fail on most of these; we find them without parsing the line.
# Patterns here start with a literal newline (the text gets one prepended) instead of using
# `^` with MULTILINE: the regex engine then skips from newline to newline, several times faster.
_BAD_LINE = re.compile(r"\n(?![ \t\r]*(?:\n|$))(?!#)(?![a-zA-Z_:][a-zA-Z0-9_:]*[{ \t])([^\n]*)")


def _samples(families: Iterable[Metric]) -> list[tuple[str, Labels, float]]:
    return [(s.name, s.labels, float(s.value)) for f in families for s in f.samples]


@lru_cache(maxsize=32)
def _line_filter(sample_names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(sample_names))
    return re.compile(rf"\n((?:{alternatives})[ \t{{][^\n]*)")


def select_lines(text: str, sample_names: frozenset[str]) -> list[str]:
    """The sample lines of the wanted metric names.

    `# HELP`/`# TYPE` lines are left out: the index is by sample name, so types add nothing,
    and parsing them costs as much as the samples.
    """
    return _line_filter(sample_names).findall("\n" + text)


def _is_static(line: str) -> bool:
    """`*config_info` series (vLLM's and SGLang's cache_config_info) carry configuration that
    rarely changes. (vLLM's lora_requests_info is not one: its value is a timestamp.)"""
    return line.split("{", 1)[0].split(" ", 1)[0].endswith("config_info")


# One sample line of the text format: name, optional {labels}, value, optional timestamp.
_SAMPLE = re.compile(
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{(.*)\})?[ \t]+([^ \t]+)(?:[ \t]+-?[0-9]+)?[ \t\r]*"
)
_PAIR = r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*'
_LABELS = re.compile(rf"(?:{_PAIR},)*(?:{_PAIR},?)?[ \t]*")
_LABEL_PAIR = re.compile(_PAIR)
_ESCAPE = re.compile(r"\\(.)")
_FLOAT = re.compile(r"[+-]?(?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.|Inf|inf|NaN|nan)")


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _parse_lines(lines: Iterable[str]) -> list[tuple[str, Labels, float]]:
    """Sample lines of the text format -> (name, labels, value); raises `ValueError`.

    The lines are the few the line filter kept, so a strict regular expression per line does
    the work of prometheus_client's character-by-character parser in a fraction of its time
    (it was most of a scrape's CPU). A line it cannot read whole is an error, as there.
    """
    samples: list[tuple[str, Labels, float]] = []
    for line in lines:
        m = _SAMPLE.fullmatch(line)
        if m is None or not _FLOAT.fullmatch(m.group(3)):
            raise ValueError(f"malformed sample {line[:80]!r}")
        name, label_text, value = m.groups()
        labels: dict[str, str] = {}
        if label_text:
            if not _LABELS.fullmatch(label_text):
                raise ValueError(f"malformed labels {line[:80]!r}")
            for key, raw in _LABEL_PAIR.findall(label_text):
                labels[key] = _unescape(raw)
        samples.append((name, labels, float(value)))
    return samples


@lru_cache(maxsize=256)
def _parse_static(block: tuple[str, ...]) -> tuple[tuple[str, Labels, float], ...]:
    """Parse of static lines, memoized: vLLM's cache_config_info line has fifteen labels,
    repeated verbatim by every scrape."""
    return tuple((name, MappingProxyType(labels), v) for name, labels, v in _parse_lines(block))


def parse(text: str, sample_names: frozenset[str], *, openmetrics: bool = False) -> SampleIndex:
    """Parse the wanted samples out of exposition text; raises `ExpositionError` only."""
    bad = _BAD_LINE.search("\n" + text)
    if bad is not None:
        raise ExpositionError(f"malformed line: {bad.group(1)[:80]!r}")
    lines = select_lines(text, sample_names)
    try:
        if openmetrics:
            om_text = "\n".join(lines) + "\n# EOF\n"
            samples = _samples(openmetrics_families(om_text))  # type: ignore[no-untyped-call]
        else:
            static = tuple(line for line in lines if _is_static(line))
            live = [line for line in lines if not _is_static(line)]
            samples = [*_parse_static(static), *_parse_lines(live)]
        return SampleIndex.from_samples(samples)
    except Exception as exc:  # the parsers raise ValueError, IndexError, KeyError, ...
        raise ExpositionError(f"{type(exc).__name__}: {str(exc)[:120]}") from exc
