"""manifests/: every object valid against the Kubernetes schemas, in every region's overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from heliostat.bootstrap import BootstrapOptions, bootstrap
from heliostat.discovery.policy_resource import policy_of_resource
from tests.discovery.kustomize import build
from tests.discovery.test_crd import as_json_schema

MANIFESTS = Path(__file__).parents[2] / "manifests"
REGIONS = ["us-east", "eu-west", "ap-southeast"]
KUBERNETES = "1.33"


def rendered(region: str) -> list[dict[str, Any]]:
    return build(MANIFESTS / "overlays" / region)


def by_kind(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("region", REGIONS)
def test_every_object_of_the_overlay_is_valid(region: str) -> None:
    objects = rendered(region)
    crd = by_kind(objects, "CustomResourceDefinition", "inferencepolicies.heliostat.dev")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    kinds = set()
    for item in objects:
        kinds.add(item["kind"])
        assert item["metadata"]["labels"]["heliostat.dev/region"] == region
        if item["kind"] == "InferencePolicy":
            body = {k: v for k, v in item.items() if k != "metadata"}
            jsonschema.validate(body["spec"], as_json_schema(schema["properties"]["spec"]))
            verdict = policy_of_resource(item)
            assert verdict.accepted, verdict.message
        else:
            kubernetes_validate.validate(item, KUBERNETES, strict=True)
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "CustomResourceDefinition",
        "InferencePolicy",
        "ConfigMap",
    }


def test_the_control_plane_deployment_is_ha_probed_bounded_and_locked_down() -> None:
    objects = rendered("us-east")
    deployment = by_kind(objects, "Deployment", "heliostat")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "--policy-resource=heliostat/global" in container["args"]
    assert container["image"] == "ghcr.io/heliostat/heliostat:0.1.0"
    pdb = by_kind(objects, "PodDisruptionBudget", "heliostat")
    assert pdb["spec"]["minAvailable"] == 1
    xds = by_kind(objects, "Service", "heliostat-xds")
    assert xds["spec"]["clusterIP"] == "None"  # every replica in DNS, for Envoy's STRICT_DNS


def test_rbac_reads_slices_and_policies_and_writes_only_status() -> None:
    rules = [
        (rule["apiGroups"][0], resource, verb)
        for item in rendered("eu-west")
        if item["kind"] == "Role"
        for rule in item["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]
    writes = {(g, r) for g, r, v in rules if v not in ("get", "list", "watch")}
    assert writes == {("heliostat.dev", "inferencepolicies/status")}
    assert ("discovery.k8s.io", "endpointslices", "watch") in rules
    assert ("heliostat.dev", "inferencepolicies", "watch") in rules
    assert all(
        item["kind"] not in ("ClusterRole", "ClusterRoleBinding") for item in rendered("eu-west")
    )


@pytest.mark.parametrize("region", REGIONS)
def test_the_gateway_bootstrap_is_heliostat_bootstraps_for_the_region(region: str) -> None:
    objects = rendered(region)
    config = by_kind(objects, "ConfigMap", "heliostat-gateway-bootstrap")
    expected = bootstrap(
        BootstrapOptions(
            node_id="gateway",
            region=region,
            xds_host="heliostat-xds.heliostat.svc.cluster.local",
            xds_port=18000,
        )
    )
    assert yaml.safe_load(config["data"]["bootstrap.yaml"]) == expected
    gateway = by_kind(objects, "Deployment", "heliostat-gateway")
    volumes = gateway["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["configMap"]["name"] == "heliostat-gateway-bootstrap"


def test_the_small_region_runs_one_gateway() -> None:
    assert (
        by_kind(rendered("ap-southeast"), "Deployment", "heliostat-gateway")["spec"]["replicas"]
        == 1
    )
    assert by_kind(rendered("us-east"), "Deployment", "heliostat-gateway")["spec"]["replicas"] == 2
