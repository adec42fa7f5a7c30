"""A routing scenario: regions, replicas, SLO, workload and phases of offered load, from YAML.

The routing benchmark's fleets and workloads are data, so anyone can bring their own: a file in
`bench/scenarios/` (format in bench/README.md) names its regions and RTTs as a policy does, the
simulated replicas in each region (none: an edge region, gateways and users but no GPUs), the
model's SLO, the kind of requests (`chat` or `shared_prefix`) and phases of offered load per
origin region, either as a share of the region's capacity (`load`) or in requests per second
(`rps`, the only way for an edge region, which has no capacity).

Files are read with heliostat's own YAML reader and reported like a policy file: every problem
at FILE:LINE with its path, all of them at once (`heliostat.policy`'s line tracking and problem
rendering). The regions and their RTTs are checked by the policy's own rules, since they become
the policy heliostat is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, Field

from heliostat.policy import PolicyError, Problem
from heliostat.policy import semantics as policy_semantics
from heliostat.policy.fields import Name, Section
from heliostat.policy.loader import schema_problems
from heliostat.policy.problems import did_you_mean
from heliostat.policy.schema import Policy, Region, SimKnobs
from heliostat.policy.yamlsource import Located, Path, YamlSyntaxError, load_located

WORKLOADS = ("chat", "shared_prefix")
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class ScenarioError(PolicyError):
    """A scenario file that cannot be run; every problem at FILE:LINE, as for a policy."""


class ReplicaGroup(SimKnobs):
    """`count` replicas with the same simulator knobs (unset knobs: the simulator's defaults)."""

    count: Annotated[int, Field(ge=0, strict=True)]


class Slo(Section):
    ttft_ms: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
    network_budget_ms: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class Phase(Section):
    """Offered load for `seconds`: per origin region, `load` x its capacity or `rps` requests/s.

    With `ramp`, the rate of every origin moves linearly from the previous phase's to this
    phase's across the phase (a flash crowd's rise); otherwise it holds this phase's rate.
    A region named in neither map offers nothing during the phase.
    """

    seconds: PositiveSeconds
    load: dict[Name, Rate] = Field(default_factory=dict)
    rps: dict[Name, Rate] = Field(default_factory=dict)
    ramp: bool = False


def _as_groups(value: Any) -> Any:
    """One mapping is one group of replicas; a list is several side by side."""
    return [value] if isinstance(value, Mapping) else value


Groups = Annotated[list[ReplicaGroup], BeforeValidator(_as_groups)]


class Scenario(Section):
    name: Name
    description: str = ""
    regions: dict[Name, Region]
    replicas: dict[Name, Groups]
    slo: Slo
    workload: Literal["chat", "shared_prefix"]
    phases: Annotated[list[Phase], Field(min_length=1)]
    seed: Annotated[int, Field(ge=0, strict=True)] = 6
    # Streamed answers (the default) measure the TTFT; unary ones carry vLLM's ORCA load
    # reports (vLLM sends none on streams), at the cost of a "TTFT" that is the whole answer.
    stream: Annotated[bool, Field(strict=True)] = True

    def groups(self, region: str) -> list[ReplicaGroup]:
        return self.replicas.get(region, [])

    def knobs(self, region: str) -> list[dict[str, Any]]:
        """One simulator-knob mapping per replica of `region`, in the file's order."""
        return [
            group.model_dump(exclude={"count"}, exclude_none=True)
            for group in self.groups(region)
            for _ in range(group.count)
        ]

    def count(self, region: str) -> int:
        return sum(group.count for group in self.groups(region))

    def is_edge(self, region: str) -> bool:
        """An edge region: gateways and users, no replicas."""
        return self.count(region) == 0

    def rtt_ms(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        if b in self.regions[a].rtt_ms:
            return self.regions[a].rtt_ms[b]
        return self.regions[b].rtt_ms[a]

    def by_distance(self, origin: str) -> list[str]:
        """Every region, nearest first (the origin itself first)."""
        return sorted(self.regions, key=lambda r: (self.rtt_ms(origin, r), r))

    def within_budget(self, origin: str) -> list[str]:
        """The regions a request from `origin` may be served in (origin first), by RTT."""
        budget = self.slo.network_budget_ms
        return [r for r in self.by_distance(origin) if self.rtt_ms(origin, r) <= budget]

    @property
    def seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)


def load_scenario(path: str | FsPath) -> Scenario:
    """Read and check one scenario file; ScenarioError lists every problem at FILE:LINE."""
    source = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(
            source, [Problem((), f"cannot read scenario file: {reason}", 1)]
        ) from None
    return parse_scenario(text, source)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        located = load_located(text)
    except YamlSyntaxError as exc:
        raise ScenarioError(source, [Problem((), _about_scenario(exc.message), exc.line)]) from None
    problems = [
        Problem(path, "duplicate key: a later value would silently replace the earlier one", line)
        for path, line in located.duplicate_keys
    ]
    if not isinstance(located.data, dict):
        problems.append(Problem((), "expected a mapping with name, regions, replicas, ...", 1))
        raise ScenarioError(source, problems)
    try:
        scenario = Scenario.model_validate(located.data)
    except pydantic.ValidationError as exc:
        found = [_as_written(p, located) for p in schema_problems(exc, located, Scenario)]
        raise ScenarioError(source, problems + found) from None
    problems += [_locate(p, located) for p in check(scenario)]
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def _about_scenario(message: str) -> str:
    """The YAML reader speaks of policy files; these are scenario files."""
    if message.startswith("the file is empty"):
        return "the file is empty: expected one scenario"
    if message.startswith("expected one YAML document"):
        return "expected one YAML document per scenario file, found several"
    return message


def _as_written(problem: Problem, located: Located) -> Problem:
    """A region's replicas written as one mapping are validated as a one-group list: name
    the problem as the file has it (`replicas.na.speed`, not `replicas.na[0].speed`)."""
    path = problem.path
    replicas = located.data.get("replicas") if isinstance(located.data, dict) else None
    if (
        len(path) >= 3
        and path[0] == "replicas"
        and path[2] == 0
        and isinstance(replicas, dict)
        and isinstance(replicas.get(path[1]), dict)
    ):
        return _locate(Problem((*path[:2], *path[3:]), problem.message), located)
    return problem


def _locate(problem: Problem, located: Located) -> Problem:
    return Problem(problem.path, problem.message, located.line_of(problem.path))


def check(scenario: Scenario) -> list[Problem]:
    """Rules relating one part of a scenario to another (shapes are pydantic's)."""
    return [*_regions(scenario), *_replicas(scenario), *_phases(scenario)]


def _regions(scenario: Scenario) -> Iterator[Problem]:
    """The policy's own RTT rules (heliostat is given these regions): its problems under
    `spec.regions` are the scenario's under `regions`, the same shape."""
    first = next(iter(scenario.regions), "none")
    policy = Policy.model_validate(
        {
            "apiVersion": "heliostat/v1",
            "kind": "InferencePolicy",
            "metadata": {"name": "scenario"},
            "spec": {
                "regions": {r: region.model_dump() for r, region in scenario.regions.items()},
                "models": [
                    {"name": "m", "endpoints": [{"address": "127.0.0.1:1", "region": first}]}
                ],
            },
        }
    )
    for problem in policy_semantics.check(policy):
        if problem.path[:2] == ("spec", "regions"):
            yield Problem(problem.path[1:], problem.message)


def _replicas(scenario: Scenario) -> Iterator[Problem]:
    regions = scenario.regions
    for region in scenario.replicas:
        if region not in regions:
            yield Problem(
                ("replicas", region), f"unknown region {region!r}{did_you_mean(region, regions)}"
            )
    for region in regions:
        if region not in scenario.replicas:
            yield Problem(
                ("replicas",),
                f"no replicas given for region {region!r} (count: 0 makes it an edge region)",
            )
    if not any(scenario.count(r) for r in regions):
        yield Problem(("replicas",), "no region has replicas: at least one count must be > 0")


def _phases(scenario: Scenario) -> Iterator[Problem]:
    regions = scenario.regions
    offered = False
    for index, phase in enumerate(scenario.phases):
        base: Path = ("phases", index)
        if index == 0 and phase.ramp:
            yield Problem((*base, "ramp"), "the first phase has no earlier rate to ramp from")
        for key, rates in (("load", phase.load), ("rps", phase.rps)):
            for region, rate in rates.items():
                path = (*base, key, region)
                offered = offered or rate > 0
                if region not in regions:
                    yield Problem(path, f"unknown region {region!r}{did_you_mean(region, regions)}")
                elif key == "load" and scenario.is_edge(region):
                    yield Problem(
                        path,
                        f"{region!r} is an edge region (no replicas, so no capacity): "
                        "give its users in rps",
                    )
        for region in sorted(set(phase.load) & set(phase.rps)):
            yield Problem((*base, "rps", region), f"{region!r} is given both load and rps")
    if not offered:
        yield Problem(("phases",), "no phase offers any load")


def scenario_files(directory: FsPath) -> list[FsPath]:
    """The scenario files of a directory, in name order (`*.yaml` and `*.yml`)."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_all(paths: Sequence[FsPath]) -> list[Scenario]:
    """Every file checked before anything runs; all their problems together, file by file.

    Scenario names key the results, so two files may not share one."""
    loaded: list[tuple[FsPath, Scenario]] = []
    errors: list[str] = []
    for path in paths:
        try:
            loaded.append((path, load_scenario(path)))
        except ScenarioError as exc:
            errors.extend(exc.lines())
    first: dict[str, FsPath] = {}
    for path, scenario in loaded:
        if scenario.name in first:
            line = load_located(path.read_text(encoding="utf-8")).line_of(("name",))
            errors.append(
                f"{path}:{line}: name: {scenario.name!r} is taken by {first[scenario.name]}"
            )
        first.setdefault(scenario.name, path)
    if errors:
        raise ValueError("\n".join(errors))
    return [scenario for _, scenario in loaded]


def describe(scenario: Scenario) -> dict[str, Any]:
    """The scenario as the result's setup records it (what was run, in the file's terms)."""
    return dict(scenario.model_dump(mode="json", exclude_none=True))
