"""The InferencePolicy CustomResourceDefinition, generated from the policy schema. Pure.

There is one schema, `heliostat.policy.schema.Spec`; the CRD's OpenAPI schema is derived from
its JSON Schema, so a field added to the policy file is a field of the custom resource the
next time this runs (`python -m heliostat.discovery.crd > manifests/base/crd.yaml`; a test
fails when the checked-in file is stale).

Kubernetes wants a *structural* OpenAPI v3.0 schema, so the JSON Schema is rewritten: `$ref`s
inlined, `null` alternatives become `nullable`, `const` an enum, numeric exclusive bounds the
3.0 boolean form, and a number-or-string (a duration: `500ms` or `2`) `x-kubernetes-int-or-
string`. Defaults are left out: heliostat applies them itself, and the API server would
otherwise write them into every stored object. The API server checks the shape; heliostat's
own validator (cross-references, RTT completeness, ranges that depend on each other) then
decides, and reports its verdict in the resource's status.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from heliostat.policy.schema import API_GROUP, API_VERSION, Spec

KIND = "InferencePolicy"
PLURAL = "inferencepolicies"
SINGULAR = "inferencepolicy"
CRD_NAME = f"{PLURAL}.{API_GROUP}"
ACCEPTED = "Accepted"

Schema = dict[str, Any]

_DROPPED = frozenset({"title", "default", "propertyNames", "examples"})


def spec_schema() -> Schema:
    """`Spec` as a structural OpenAPI v3.0 schema."""
    source = Spec.model_json_schema(mode="validation")
    definitions = source.pop("$defs", {})
    return _convert(source, definitions)


def _convert(node: Schema, definitions: dict[str, Schema]) -> Schema:
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = definitions[ref.rsplit("/", 1)[-1]]
        node = {**target, **node}  # a field's own description wins over its type's
    result: Schema = {}
    alternatives = node.pop("anyOf", None)
    if alternatives is not None:
        result.update(_alternatives(alternatives, definitions))
    for key, value in node.items():
        if key not in _DROPPED:
            result.update(_keyword(key, value, definitions))
    if result.get("type") == "object" and "properties" not in result:
        result.setdefault("additionalProperties", {})
    return result


def _alternatives(alternatives: list[Schema], definitions: dict[str, Schema]) -> Schema:
    """A pydantic `anyOf` in structural form: an optional field is `nullable`, a number or
    a string (a quantity such as 5 or "5%") is int-or-string; nothing else has one."""
    result: Schema = {}
    present = [a for a in alternatives if a != {"type": "null"}]
    if len(present) != len(alternatives):
        result["nullable"] = True
    types = sorted(str(a.get("type")) for a in present)
    if len(present) == 1:
        result.update(_convert(present[0], definitions))
    elif types in (["number", "string"], ["integer", "string"]):
        result["x-kubernetes-int-or-string"] = True
    else:
        raise ValueError(f"no structural form for anyOf {types}")
    return result


def _keyword(key: str, value: Any, definitions: dict[str, Schema]) -> Schema:
    """One JSON-Schema keyword as the API server's structural schema spells it."""
    if key == "properties":
        return {"properties": {k: _convert(v, definitions) for k, v in value.items()}}
    if key == "additionalProperties":
        # `false` (unknown keys are errors) is not structural: the API server prunes
        # unknown fields instead, and heliostat's validator names them.
        return {key: _convert(value, definitions)} if isinstance(value, dict) else {}
    if key == "items":
        return {"items": _convert(value, definitions)}
    if key == "const":
        return {"enum": [value]}
    if key in ("exclusiveMinimum", "exclusiveMaximum"):
        bound = "minimum" if key == "exclusiveMinimum" else "maximum"
        return {bound: value, key: True}
    return {key: value}


def status_schema() -> Schema:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "listKind": f"{KIND}List",
                "shortNames": ["ipol"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Accepted",
                            "type": "string",
                            "jsonPath": f'.status.conditions[?(@.type=="{ACCEPTED}")].status',
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": f'.status.conditions[?(@.type=="{ACCEPTED}")].reason',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render() -> str:
    header = (
        "# Generated from heliostat/policy/schema.py by `python -m heliostat.discovery.crd`;\n"
        "# do not edit (tests/discovery/test_crd.py fails when this file is stale).\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
