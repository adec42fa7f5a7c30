"""Read a policy file into a `Policy`, or fail with every problem located at FILE:LINE."""

from __future__ import annotations

import types
import typing
from pathlib import Path as FsPath
from typing import Any

import pydantic
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from heliostat.policy import semantics
from heliostat.policy.problems import PolicyError, Problem, did_you_mean
from heliostat.policy.schema import Policy
from heliostat.policy.yamlsource import Located, Path, YamlSyntaxError, load_located


def load_policy(path: str | FsPath) -> Policy:
    source = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(source, [Problem((), f"cannot read policy file: {reason}", 1)]) from None
    return parse_policy(text, source)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        located = load_located(text)
    except YamlSyntaxError as exc:
        raise PolicyError(source, [Problem((), exc.message, exc.line)]) from None
    problems = [
        Problem(path, "duplicate key: a later value would silently replace the earlier one", line)
        for path, line in located.duplicate_keys
    ]
    if not isinstance(located.data, dict):
        problems.append(Problem((), "expected a mapping with apiVersion, kind, metadata, spec", 1))
        raise PolicyError(source, problems)
    try:
        policy = Policy.model_validate(located.data)
    except pydantic.ValidationError as exc:
        problems += schema_problems(exc, located, Policy)
        raise PolicyError(source, problems) from None
    problems += [_locate(problem, located) for problem in semantics.check(policy)]
    if problems:
        raise PolicyError(source, problems)
    return policy


def schema_problems(
    exc: pydantic.ValidationError, located: Located, root: type[BaseModel]
) -> list[Problem]:
    """pydantic's errors for a document of schema `root`, as located problems (did-you-mean
    hints from `root`'s fields): other YAML files validated by heliostat's tools (the
    benchmark's scenarios) report their mistakes exactly as a policy file does."""
    return [_locate(_from_pydantic(error, root), located) for error in exc.errors()]


def _locate(problem: Problem, located: Located) -> Problem:
    return Problem(problem.path, problem.message, located.line_of(problem.path))


def _from_pydantic(error: ErrorDetails, root: type[BaseModel] = Policy) -> Problem:
    path: Path = tuple(part for part in error["loc"] if part != "[key]")
    kind = error["type"]
    if kind == "extra_forbidden":
        key = path[-1]
        hint = did_you_mean(key, _fields_at(path[:-1], root))
        return Problem(path, f"unknown key {key!r}{hint}")
    if kind == "missing":
        return Problem(path, f"missing required key {path[-1]!r}")
    message = error["msg"].removeprefix("Value error, ")
    if kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "enum"):
        message += f" (got {_show(error.get('input'))})"
    return Problem(path, message[:1].lower() + message[1:])


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields_at(path: Path, root: type[BaseModel] = Policy) -> list[str]:
    """The keys allowed at `path` of a `root` document, for did-you-mean hints."""
    current: Any = root
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = field.annotation
        else:
            # list[X] / dict[K, X] / tuple[X, ...]: the element is the last argument that
            # is not the Ellipsis of a variable-length tuple.
            args = [a for a in typing.get_args(current) if a is not Ellipsis]
            current = args[-1] if args else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and Annotated so the model class underneath shows."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = members[0] if len(members) == 1 else annotation
            if len(members) != 1:
                return annotation
        else:
            return annotation
