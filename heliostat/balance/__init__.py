"""The control law: signals + topology + policy -> per-region views. Pure: no I/O here."""

from heliostat.balance.priorities import region_priorities
from heliostat.balance.static import static_views
from heliostat.balance.view import (
    ClusterView,
    EndpointView,
    Health,
    LocalityView,
    RegionView,
    TrafficClass,
    Views,
)

__all__ = [
    "ClusterView",
    "EndpointView",
    "Health",
    "LocalityView",
    "RegionView",
    "TrafficClass",
    "Views",
    "region_priorities",
    "static_views",
]
