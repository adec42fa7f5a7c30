"""Read a scenario file, or fail with every problem located at FILE:LINE.

The policy loader's machinery is reused as is: YAML with line numbers, pydantic's errors
turned into problems at their line (`schema_problems`), `PolicyError`'s rendering. The
model's policy section is checked by building the policy heliostat would serve for the
scenario's fleet and running the policy's own checks on it; their problems are moved back
to the scenario's lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path as FsPath

import pydantic

from heliostat.planet.scenario import Canary, FlashCrowd, RegionLoss, Scenario
from heliostat.planet.topology import RESERVED_KEYS, ReplicaId, endpoint_entries, policy_document
from heliostat.policy import semantics
from heliostat.policy.loader import schema_problems
from heliostat.policy.problems import PolicyError, Problem, did_you_mean
from heliostat.policy.schema import Policy
from heliostat.policy.yamlsource import Located, Path, YamlSyntaxError, load_located

# Parts of a model's policy the planet does not simulate.
UNSUPPORTED_KEYS = {
    "versions": "the planet models builds with `canary` events, not version routes",
    "canary": "the planet models builds with `canary` events, not version routes",
    "fallback": "the planet serves one model",
    "drain": "drains are not part of a scenario",
}


class ScenarioError(PolicyError):
    """A scenario that cannot be played; every problem at its line."""


def load_scenario(path: str | FsPath) -> Scenario:
    source = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(source, [Problem((), f"cannot read scenario: {reason}", 1)]) from None
    return parse_scenario(text, source)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        located = load_located(text)
    except YamlSyntaxError as exc:
        message = exc.message.replace("InferencePolicy document", "scenario").replace(
            "policy file", "scenario file"
        )
        raise ScenarioError(source, [Problem((), message, exc.line)]) from None
    problems = [
        Problem(path, "duplicate key: a later value would silently replace the earlier one", line)
        for path, line in located.duplicate_keys
    ]
    if not isinstance(located.data, dict):
        problems.append(Problem((), "expected a mapping with name, regions, demand", 1))
        raise ScenarioError(source, problems)
    try:
        scenario = Scenario.model_validate(located.data)
    except pydantic.ValidationError as exc:
        problems += schema_problems(exc, located, Scenario)
        raise ScenarioError(source, problems) from None
    problems += [_locate(p, located) for p in check(scenario)]
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def _locate(problem: Problem, located: Located) -> Problem:
    return Problem(problem.path, problem.message, located.line_of(problem.path))


def check(scenario: Scenario) -> list[Problem]:
    """Rules relating one part of the scenario to another, and the policy's own rules."""
    problems = [*_regions(scenario), *_events(scenario), *_scaling(scenario)]
    problems += _policy(scenario)
    return problems


def _known(scenario: Scenario, region: str, path: Path) -> Iterator[Problem]:
    if region not in scenario.regions:
        hint = did_you_mean(region, scenario.regions)
        yield Problem(path, f"unknown region {region!r}{hint}")


def _regions(scenario: Scenario) -> Iterator[Problem]:
    if not any(r.replicas for r in scenario.regions.values()):
        yield Problem(("regions",), "at least one region needs replicas (count > 0)")
    for origin in scenario.demand:
        yield from _known(scenario, origin, ("demand", origin))
    if scenario.step <= 0:
        yield Problem(("step",), "must be longer than 0")
    if scenario.duration <= 0:
        yield Problem(("duration",), "must be longer than 0")


def _events(scenario: Scenario) -> Iterator[Problem]:
    for index, event in enumerate(scenario.events):
        base: Path = ("events", index)
        if event.at > scenario.duration:
            yield Problem((*base, "at"), "is after the end of the scenario")
        if isinstance(event, RegionLoss | Canary):
            yield from _known(scenario, event.region, (*base, "region"))
            if event.until is not None and event.until <= event.at:
                yield Problem((*base, "until"), "must be after `at`")
        if isinstance(event, Canary):
            updated = scenario.regions.get(event.region)
            if updated is not None and updated.replicas == 0:
                yield Problem((*base, "region"), f"{event.region!r} has no replicas to update")
        if isinstance(event, FlashCrowd):
            for position, name in enumerate(event.regions):
                yield from _known(scenario, name, (*base, "regions", position))


def _scaling(scenario: Scenario) -> Iterator[Problem]:
    scaling = scenario.scaling
    for region, limits in scaling.limits.items():
        path: Path = ("scaling", "limits", region)
        yield from _known(scenario, region, path)
        if limits.max is not None and limits.min > limits.max:
            yield Problem((*path, "min"), f"min ({limits.min}) exceeds max ({limits.max})")
    if scaling.interval <= 0:
        yield Problem(("scaling", "interval"), "must be longer than 0")
    gpus = scenario.model.gpus_per_replica
    if scaling.pool_gpus is not None and scaling.enabled and scaling.pool_gpus < gpus:
        yield Problem(("scaling", "pool_gpus"), f"holds no replica of {gpus} GPUs")


def _policy(scenario: Scenario) -> list[Problem]:
    """The policy section, as the policy loader would judge the policy built from it."""
    problems = []
    for key in scenario.policy:
        if key in RESERVED_KEYS:
            problems.append(
                Problem(("policy", key), f"{key!r} is set by the scenario; remove it here")
            )
        elif key in UNSUPPORTED_KEYS:
            problems.append(Problem(("policy", key), f"not simulated: {UNSUPPORTED_KEYS[key]}"))
    if problems:
        return problems
    replicas = [
        ReplicaId(name, 0) for name, region in sorted(scenario.regions.items()) if region.replicas
    ]
    document = policy_document(scenario, endpoint_entries(scenario, replicas))
    try:
        policy = Policy.model_validate(document)
    except pydantic.ValidationError as exc:
        located = Located(document, {})
        return [_moved(p) for p in schema_problems(exc, located, Policy)]
    return [_moved(p) for p in semantics.check(policy)]


def _moved(problem: Problem) -> Problem:
    """A problem of the built policy, at the scenario path that produced it."""
    path = problem.path
    if path[:3] == ("spec", "models", 0):
        rest = path[3:]
        if rest[:1] == ("slo",):
            return Problem(("slo", *rest[1:]), problem.message)
        return Problem(("policy", *rest), problem.message)
    if path[:2] == ("spec", "regions"):
        return Problem(("regions", *path[2:]), problem.message)
    return Problem((), f"the policy built from this scenario: {problem.message}")
