"""The InferencePolicy CRD is the policy schema: generated from it, and agreeing with it."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from heliostat.discovery.crd import crd, render
from heliostat.policy import PolicyError, parse_policy
from heliostat.policy.schema import Spec

ROOT = Path(__file__).parents[2]
CHECKED_IN = ROOT / "manifests" / "base" / "crd.yaml"


def spec_schema() -> dict[str, Any]:
    version = crd()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def as_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 (as Kubernetes reads it) -> JSON Schema 2020-12, for `jsonschema`."""
    if isinstance(node, list):
        return [as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    out.pop("nullable", None)
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(flag) is True:
            out[flag] = out.pop(bound)
    if node.get("type") == "object" and "properties" in node:
        out["additionalProperties"] = False  # what heliostat's validator does with unknown keys
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def crd_accepts(spec: Any) -> bool:
    try:
        jsonschema.validate(spec, as_json_schema(spec_schema()))
    except jsonschema.ValidationError:
        return False
    return True


def heliostat_accepts(spec: Any) -> bool:
    document = {"apiVersion": "heliostat.dev/v1alpha1", "kind": "InferencePolicy"}
    text = yaml.safe_dump({**document, "metadata": {"name": "p"}, "spec": spec})
    try:
        parse_policy(text)
    except PolicyError:
        return False
    return True


def example_specs() -> list[dict[str, Any]]:
    specs = [yaml.safe_load(p.read_text())["spec"] for p in sorted(ROOT.glob("policies/*.yaml"))]
    example = yaml.safe_load((ROOT / "manifests" / "base" / "policy.yaml").read_text())
    return [*specs, example["spec"]]


def test_the_checked_in_crd_is_generated_from_the_current_schema() -> None:
    assert CHECKED_IN.read_text() == render(), (
        "manifests/base/crd.yaml is stale: python -m heliostat.discovery.crd > "
        "manifests/base/crd.yaml"
    )


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    document = yaml.safe_load(CHECKED_IN.read_text())
    kubernetes_validate.validate(document, "1.33", strict=True)


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        paths.add(prefix + name)
        for inner in _models_in(info.annotation):
            paths |= _fields(inner, f"{prefix}{name}.")
    return paths


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, dict, list):
        for argument in typing.get_args(annotation):
            if argument is not Ellipsis:
                found += _models_in(argument)
    return found


def _properties(node: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, child in node.get("properties", {}).items():
        paths.add(prefix + name)
        paths |= _properties(child, f"{prefix}{name}.")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            paths |= _properties(node[key], prefix)
    return paths


def test_every_field_of_the_policy_is_a_field_of_the_resource_and_no_other() -> None:
    assert _properties(spec_schema()) == _fields(Spec)


def test_documents_heliostat_accepts_the_api_server_accepts() -> None:
    for spec in example_specs():
        assert heliostat_accepts(spec)
        assert crd_accepts(spec), spec


def _edit(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    node: Any = spec
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("models.0.engine", "llamacpp"),  # not an engine
        ("models.0.slo.ttft_ms", 0),  # below its minimum
        ("models.0.overflow.max_share", 1.5),  # above its maximum
        ("models.0.thresholds.kv", 0),  # exclusive minimum
        ("gateway.port", "10000"),  # a string for an integer
        ("models.0.endpoints", "10.0.0.1:8000"),  # not a list
        ("models.0.kubernetes", {"port": True}),  # neither a name nor a number
        ("models.0.surprise", 1),  # unknown key: the API server prunes, heliostat refuses
    ],
)
def test_documents_the_schema_refuses_both_refuse(path: str, value: Any) -> None:
    base = example_specs()[0]
    spec = _edit(base, path, value)
    assert not heliostat_accepts(spec)
    assert not crd_accepts(spec)
