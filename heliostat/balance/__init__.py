"""The control law: signals + topology + policy -> per-region views. Pure: no I/O here."""

from heliostat.balance.demand import NO_GATEWAYS, GatewayLoad, OriginLoad
from heliostat.balance.describe import describe
from heliostat.balance.law import compute
from heliostat.balance.priorities import region_priorities
from heliostat.balance.state import ControlState
from heliostat.balance.static import static_views
from heliostat.balance.view import (
    ClusterView,
    EndpointView,
    FallbackView,
    Health,
    InFlight,
    LocalityView,
    RegionView,
    TrafficClass,
    Views,
)

__all__ = [
    "NO_GATEWAYS",
    "ClusterView",
    "ControlState",
    "EndpointView",
    "FallbackView",
    "GatewayLoad",
    "Health",
    "InFlight",
    "LocalityView",
    "OriginLoad",
    "RegionView",
    "TrafficClass",
    "Views",
    "compute",
    "describe",
    "region_priorities",
    "static_views",
]
