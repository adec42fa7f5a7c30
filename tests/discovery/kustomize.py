"""The part of `kustomize build` the manifests use: resources, labels, images, JSON patches.

No kustomize or kubectl binary is installed here; this renders exactly the features the
overlays use, and refuses any other, so a manifest that starts to use more fails loudly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Json = dict[str, Any]
KNOWN = {"apiVersion", "kind", "resources", "labels", "images", "patches"}


def build(directory: Path) -> list[Json]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise ValueError(f"{directory}: kustomize features this renderer lacks: {unknown}")
    objects = _resources(directory, spec.get("resources", []))
    _label(directory, objects, spec.get("labels", []))
    _retag(objects, spec.get("images", []))
    for patch in spec.get("patches", []):
        _patch(directory, objects, patch)
    return copy.deepcopy(objects)


def _resources(directory: Path, entries: list[str]) -> list[Json]:
    objects: list[Json] = []
    for entry in entries:
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += build(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def _label(directory: Path, objects: list[Json], groups: list[Json]) -> None:
    for group in groups:
        if set(group) - {"pairs"}:
            raise ValueError(f"{directory}: only labels[].pairs is rendered")
        for item in objects:
            item["metadata"].setdefault("labels", {}).update(group["pairs"])


def _retag(objects: list[Json], images: list[Json]) -> None:
    for image in images:
        for container in _containers(objects):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image['newName']}:{image['newTag']}"


def _patch(directory: Path, objects: list[Json], patch: Json) -> None:
    target = patch["target"]
    matched = [
        o
        for o in objects
        if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]
    ]
    if len(matched) != 1:
        raise ValueError(f"{directory}: patch target {target} matched {len(matched)}")
    for op in yaml.safe_load(patch["patch"]):
        _apply(matched[0], op)


def _containers(objects: list[Json]) -> list[Json]:
    return [
        c
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


def _apply(item: Json, op: Json) -> None:
    if op["op"] not in ("replace", "add"):
        raise ValueError(f"JSON patch op {op['op']!r} is not rendered")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = item
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op["op"] == "add":
            node.insert(index, op["value"])
        else:
            node[index] = op["value"]
    else:
        if op["op"] == "replace" and last not in node:
            raise ValueError(f"replace of a missing {op['path']}")
        node[last] = op["value"]
