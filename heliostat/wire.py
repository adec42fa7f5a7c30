"""The wire contract: every name heliostat shares with Envoy, the replicas and its clients.

Headers, the endpoint-metadata namespace, the separators inside derived cluster names and the
Envoy filter names are read on one side and written on another (translation writes a header
that the simulated replica, the admin page, the benchmark and the tests read). Keeping them in
one ground-floor module, importing nothing, means a rename cannot leave a reader behind, and
any layer (policy, translate, sim, admin, bench) may import it.
"""

from __future__ import annotations

# Request headers clients send.
MODEL_HEADER = "x-model"
"""The model a request asks for (else the JSON body's `"model"`)."""
PRIORITY_HEADER = "x-priority"
"""`batch` marks a request of the batch class; anything else is interactive."""
SESSION_HEADER = "x-session-id"
"""The default session header consistent hashing keys on (`affinity.header` overrides it)."""
TENANT_HEADER = "x-tenant"
"""The default header a tenant rule matches on (`tenants[].header` overrides it)."""
REQUEST_ID_HEADER = "x-request-id"
"""Envoy's per-request UUID: the fallback's bucket key when a request has no session."""

# Headers heliostat's gateways write.
ORIGIN_HEADER = "x-heliostat-origin-region"
"""The region whose gateway received the request, added before it is forwarded."""
PREFIX_KEY_HEADER = "x-heliostat-prefix-key"
"""The digest of a prompt's first characters, which the route hashes on (Lua filter)."""
SERVED_MODEL_HEADER = "x-heliostat-served-model"
"""On responses: the model that actually served the request."""
FALLBACK_FROM_HEADER = "x-heliostat-fallback-from"
"""On a request moved to its fallback model: the model it asked for."""

# Headers replicas (heliostat's simulated ones) answer with.
REPLICA_ID_HEADER = "x-replica-id"
REPLICA_REGION_HEADER = "x-replica-region"
REPLICA_VERSION_HEADER = "x-replica-version"

RESERVED_HEADER_PREFIXES = ("x-heliostat-", "x-envoy-")
"""Header prefixes heliostat or Envoy own: a policy may not route on them."""

# Endpoint metadata and load reports.
METADATA_NAMESPACE = "heliostat"
"""Filter-metadata namespace of what heliostat tells Envoy's admin pages about a resource:
a cluster's or locality's explanation, and each EDS endpoint's reason code."""
ENDPOINT_REASON_KEY = "why"
"""The one key of an EDS endpoint's metadata: its reason code (ENDPOINT_REASON_CODES).

Only the code travels: an endpoint's full explanation (its saturation, load driver,
failures, capacity tier, goal) was 81% of EDS bytes and is read where operators read it,
`/debug/state` and `heliostat explain`."""
ENDPOINT_REASON_CODES = {
    "healthy": "ok",
    "saturated": "sat",
    "stale": "stale",
    "static": "static",
    "unhealthy": "fail",
    "draining": "drain",
}
"""Reason code by the endpoint's state. A healthy endpoint close to saturation and hotter
than its peers (the `near` band) is `near`; a code ends in `+ramp` while the published weight
is on its way to a different goal. A state not listed here travels as its own name."""
NEAR_REASON_CODE = "near"
RAMP_REASON_SUFFIX = "+ramp"
PLAIN_REASON_CODE = "ok"
"""The code an endpoint does not carry: one with no metadata is plainly healthy (`ok`).
Most endpoints are, and for them the code would be half of their entry's bytes."""
DROP_CATEGORY = "heliostat_refused"
"""The drop_overloads category: Envoy names it in its load reports' dropped requests."""

# LEDS resource names (delta xDS): `xdstp://<authority>/envoy.config.endpoint.v3.LbEndpoint/
# <cluster>/<region>-p<priority>/<host>_<port>`, each locality's collection globbed with `*`.
LEDS_AUTHORITY = "heliostat"
"""The xdstp authority of heliostat's LEDS collections; Envoy echoes the names back in its
subscriptions, and matches each endpoint resource to its collection by them."""

# Derived cluster names: `<model>@<version>` and `<model>~<tenant>`.
VERSION_SEPARATOR = "@"
TENANT_SEPARATOR = "~"

# Envoy HTTP filters heliostat configures (their names key route metadata too).
LUA_FILTER_NAME = "envoy.filters.http.lua"
JSON_TO_METADATA_FILTER = "envoy.filters.http.json_to_metadata"
