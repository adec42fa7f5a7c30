"""How big a policy may be, checked before anything expensive reads it.

A policy is read by every `heliostat validate` and by the watcher of a running `serve` on each
edit; a file that is too big must be refused in well under a second, with one line saying
which limit it crossed, instead of being validated for minutes. The limits sit far above any
policy a person writes or a fleet generator produces:

- 4 MiB per file (the same cap the scraper puts on a metrics page): about 70,000 endpoints in
  flow style (`- {address: 10.0.0.1:8000, region: us-east}`);
- 20,000 endpoints per model: one ClusterLoadAssignment carries every endpoint of a model to
  every Envoy of a region, at about 150 bytes each (measured with heliostat's EDS metadata),
  so 20,000 endpoints are a 3 MB resource on every push, under the 4 MiB message size most
  gRPC clients accept by default.

YAML's own costs (nesting depth, aliases, expanded size) are capped while parsing, in
`yamlsource.YamlLimits`.
"""

from __future__ import annotations

from typing import Any

from heliostat.policy.problems import Problem

MAX_POLICY_BYTES = 4 * 1024 * 1024
MAX_ENDPOINTS_PER_MODEL = 20_000


def too_large(size: int) -> Problem | None:
    """A problem when a policy file of `size` bytes is over the limit."""
    if size <= MAX_POLICY_BYTES:
        return None
    return Problem(
        (),
        f"the policy file is larger than {MAX_POLICY_BYTES // (1024 * 1024)} MiB "
        f"({MAX_POLICY_BYTES:,} bytes), the most heliostat reads",
        1,
    )


def check_document(data: Any) -> list[Problem]:
    """Limits on the raw document, before the schema walks it: a model with too many
    endpoints is refused without validating each of them."""
    spec = data.get("spec") if isinstance(data, dict) else None
    models = spec.get("models") if isinstance(spec, dict) else None
    if not isinstance(models, list):
        return []
    problems = []
    for index, model in enumerate(models):
        endpoints = model.get("endpoints") if isinstance(model, dict) else None
        if isinstance(endpoints, list) and len(endpoints) > MAX_ENDPOINTS_PER_MODEL:
            problems.append(
                Problem(
                    ("spec", "models", index, "endpoints"),
                    f"{len(endpoints):,} endpoints: a model may have at most "
                    f"{MAX_ENDPOINTS_PER_MODEL:,} (all of them travel in one EDS resource "
                    "to every Envoy)",
                )
            )
    return problems
