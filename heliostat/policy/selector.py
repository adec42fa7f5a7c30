"""`models[].kubernetes`: which EndpointSlices hold a model's replicas.

A model's endpoints can come from the policy file, from the cluster, or both. This section
only says where to look; `heliostat.discovery` does the looking (the policy stays a value that
the pure core reads, and the Kubernetes client stays out of it).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from heliostat.policy.fields import Name, Section

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_label_key(value: str) -> str:
    """A Kubernetes label key: an optional DNS-subdomain prefix and '/', then a name."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"invalid label key {value!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"invalid label key {value!r}: the name after any '/' is 1-63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValueError(
            f"invalid label value {value!r}: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_namespace(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"invalid namespace {value!r}: lower-case letters, digits and '-' (a DNS label)"
        )
    return value


LabelKey = Annotated[str, AfterValidator(check_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
Namespace = Annotated[str, AfterValidator(check_namespace)]
PortRef = (
    Annotated[str, Field(min_length=1, max_length=15)]
    | Annotated[int, Field(ge=1, le=65535, strict=True)]
)

MODEL_LABEL = "heliostat.dev/model"
REGION_LABEL = "topology.kubernetes.io/region"
VERSION_LABEL = "heliostat.dev/version"


class KubernetesSelector(Section):
    """EndpointSlices whose labels match `match_labels` in `namespace` are this model's.

    The region of a slice is its `region_label` label (the well-known topology label by
    default, which multi-cluster tools put on slices they mirror from other regions), else
    `region`; its version is its `version_label` label, if any.
    """

    namespace: Namespace = "default"
    # Left empty: `heliostat.dev/model: <model name>`.
    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    # The EndpointSlice port by name or number; left out, a slice must have exactly one port.
    port: PortRef | None = None
    region: Name | None = None
    region_label: LabelKey = REGION_LABEL
    version_label: LabelKey = VERSION_LABEL
    # Concurrent sequences per discovered replica, as `endpoints[].slots`.
    slots: Annotated[int, Field(ge=1, strict=True)] | None = None

    def labels(self, model: str) -> dict[str, str]:
        return dict(self.match_labels) if self.match_labels else {MODEL_LABEL: model}

    def label_selector(self, model: str) -> str:
        """The selector in the API server's `labelSelector` syntax, keys sorted so two
        replicas (and two models with the same labels) ask for the very same thing."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels(model).items()))
