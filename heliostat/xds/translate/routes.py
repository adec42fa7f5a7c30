"""Routes: which request of which model goes to which cluster, and what Envoy does on the way.

The model comes from the `x-model` header or, when it is absent, from the body's `"model"`
(json_to_metadata, see `body.py`). For each model, in the order Envoy must try them (it takes
the first match), routes are generated for every combination of:

- tenant: a tenant's header routes to its region-pinned clusters, before the generic routes;
- priority class: `x-priority: batch` goes to the model's batch cluster with Envoy priority
  DEFAULT (the batch circuit breakers), everything else to the interactive cluster with HIGH;
- streaming: streamed requests (`"stream": true`) get the per-try timeout, unary ones not.

A route sends to one cluster or, with versions, splits between per-version clusters by
weight, choosing by the session hash so a session stays on one version. Every model route
adds `x-heliostat-origin-region`, answers `x-heliostat-served-model` and carries the retry
policy; while its view gives the model a fallback share, its metadata tells the Lua program
to move that share to the fallback model's routes (`fallback.py`). Requests naming no served
model get a JSON 404 listing the models; `GET /v1/models` and bodies that are not JSON are
answered by the gateway itself (`openai_api.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import product

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2
from google.protobuf import wrappers_pb2

from heliostat.balance import TrafficClass
from heliostat.planning.plan import ModelPlan, Target
from heliostat.policy.traffic import Tenant
from heliostat.wire import MODEL_HEADER, ORIGIN_HEADER, PRIORITY_HEADER
from heliostat.xds.translate import body, openai_api
from heliostat.xds.translate.affinity import hash_policies, prefix_key_settings
from heliostat.xds.translate.common import seconds
from heliostat.xds.translate.fallback import lua_metadata, served_model
from heliostat.xds.translate.listeners import ROUTE_CONFIG_NAME
from heliostat.xds.translate.resilience import per_try_timeout, retry_policy
from heliostat.xds.translate.tenants import tenant_matcher

_CLASSES = (TrafficClass.BATCH, TrafficClass.INTERACTIVE)  # batch first: it matches more


def route_configuration(
    plans: Sequence[ModelPlan],
    tenants: Sequence[Tenant],
    region: str | None,
    *,
    name: str = ROUTE_CONFIG_NAME,
    subset: base_pb2.Metadata | None = None,
) -> route_pb2.RouteConfiguration:
    """The routes of `plans`' models; `region` None adds no origin header (the east-west
    listener's routes keep the lender's); `subset` restricts every model route to the
    hosts of its cluster that match it (`metadata_match`: the east-west hop's own region)."""
    models = [plan.model.name for plan in plans]
    routes = [openai_api.models_route(models)]
    for by_body in (False, True):  # every header route before any body route
        for plan in plans:
            routes.extend(_model_routes(plan, tenants, region, subset, by_body=by_body))
    routes += [
        # A body that does not parse, on a request the header did not route: 400.
        openai_api.invalid_body_route([body.header_absent(MODEL_HEADER)]),
        _not_found(
            models,
            "unknown-model",
            f"no model named by the {MODEL_HEADER} header is served here",
            headers=[rc.HeaderMatcher(name=MODEL_HEADER, present_match=True)],
        ),
        _not_found(
            models,
            "unknown-body-model",
            'no model named by the body\'s "model" field is served here',
            metadata=[body.body_names_a_model()],
        ),
        _not_found(
            models,
            "missing-model",
            f'the request names no model: set the {MODEL_HEADER} header or the body\'s "model"',
        ),
    ]
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[rc.VirtualHost(name="models", domains=["*"], routes=routes)],
    )


def _model_routes(
    plan: ModelPlan,
    tenants: Sequence[Tenant],
    region: str | None,
    subset: base_pb2.Metadata | None,
    *,
    by_body: bool,
) -> list[rc.Route]:
    model = plan.model
    streams = (True, False) if per_try_timeout(model) > 0 else (False,)
    routes = []
    for tenant, traffic_class, streamed in product((*tenants, None), _CLASSES, streams):
        headers: list[rc.HeaderMatcher] = []
        metadata: list[metadata_pb2.MetadataMatcher] = []
        name = f"model:{model.name}"
        if by_body:
            headers.append(body.header_absent(MODEL_HEADER))
            metadata.append(body.body_model_is(model.name))
            name += ":body"
        else:
            headers.append(rc.HeaderMatcher(name=MODEL_HEADER, string_match=_exact(model.name)))
        if tenant is not None:
            headers.append(tenant_matcher(tenant))
            name = f"tenant:{tenant.name}:{name}"
        batch = traffic_class is TrafficClass.BATCH
        if batch:
            headers.append(rc.HeaderMatcher(name=PRIORITY_HEADER, string_match=_exact("batch")))
            name += ":batch"
        if streamed:
            metadata.append(body.streamed())
            name += ":stream"
        target = plan.targets[tenant.name if tenant else None, traffic_class]
        action = _action(plan, target, batch=batch, streamed=streamed)
        if subset is not None:
            action.metadata_match.CopyFrom(subset)
        route = rc.Route(
            name=name,
            match=rc.RouteMatch(prefix="/", headers=headers, dynamic_metadata=metadata),
            route=action,
            request_headers_to_add=_origin(region),
            response_headers_to_add=[served_model(model)],
        )
        fallback = plan.fallbacks.get(tenant.name if tenant else None)
        lua = lua_metadata(prefix_key_settings(model), fallback, MODEL_HEADER)
        if lua is not None:
            route.metadata.CopyFrom(lua)
        routes.append(route)
    return routes


def _action(plan: ModelPlan, target: Target, *, batch: bool, streamed: bool) -> rc.RouteAction:
    action = rc.RouteAction(
        timeout=seconds(0),
        retry_policy=retry_policy(plan.model, streamed=streamed),
        # Batch traffic uses the DEFAULT circuit-breaker thresholds, interactive the HIGH.
        priority=base_pb2.DEFAULT if batch else base_pb2.HIGH,
        hash_policy=hash_policies(plan.model),
    )
    if len(target.clusters) == 1:
        action.cluster = target.clusters[0][0]
    else:
        action.weighted_clusters.CopyFrom(
            rc.WeightedCluster(
                clusters=[
                    rc.WeightedCluster.ClusterWeight(
                        name=name, weight=wrappers_pb2.UInt32Value(value=weight)
                    )
                    for name, weight in target.clusters
                ],
                # Pick the version from the session hash: a session stays on one version.
                use_hash_policy=wrappers_pb2.BoolValue(value=True),
            )
        )
    return action


def _origin(region: str | None) -> list[base_pb2.HeaderValueOption]:
    if not region:
        return []
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=ORIGIN_HEADER, value=region),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    ]


def _exact(value: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=value)


def _not_found(
    models: Sequence[str],
    name: str,
    message: str,
    *,
    headers: Sequence[rc.HeaderMatcher] = (),
    metadata: Sequence[metadata_pb2.MetadataMatcher] = (),
) -> rc.Route:
    payload = json.dumps(
        {"error": {"type": "model_not_found", "message": message, "models": list(models)}},
        sort_keys=True,
    )
    return rc.Route(
        name=name,
        match=rc.RouteMatch(prefix="/", headers=headers, dynamic_metadata=metadata),
        direct_response=rc.DirectResponseAction(
            status=404, body=base_pb2.DataSource(inline_string=payload)
        ),
        response_headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="application/json"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )
