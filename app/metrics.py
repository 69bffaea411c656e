"""Prometheus metrics: HTTP requests by route, and database command latency."""

from prometheus_client import CollectorRegistry, Counter, Histogram
from pymongo import monitoring
from starlette.routing import Match
from starlette.types import Scope

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The metrics of one app instance, in a registry of its own so apps never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kindred_http_requests",
            "HTTP requests served, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "kindred_http_request_duration_seconds",
            "HTTP request latency, by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_seconds = Histogram(
            "kindred_db_operation_duration_seconds",
            "MongoDB command latency as the driver measured it, by command and outcome.",
            ["command", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_listener = _CommandTimer(self.db_seconds)
        # Ingest (app/ingest): outcome is accepted (newly stored), duplicate
        # (messageId already stored) or rejected (quarantined or refused).
        self.ingest_events = Counter(
            "kindred_ingest_events",
            "Events received over the tracking API, by source and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )


class _CommandTimer(monitoring.CommandListener):
    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._histogram.labels(event.command_name, "ok").observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._histogram.labels(event.command_name, "error").observe(event.duration_micros / 1e6)


def route_template(scope: Scope) -> str:
    """Returns the matched route's path template, so `/v1/profiles/{kind}/{value}` is one label."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    app = scope.get("app")
    router = getattr(app, "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(candidate.path)
    # Unmatched paths share one label, so scanners cannot blow up the series count.
    return "<unmatched>"
