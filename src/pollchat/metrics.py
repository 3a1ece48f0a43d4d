"""Prometheus metrics, on a registry owned by one app (never the process-global one)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest


class Metrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        # No ``*_created`` series: they doubled the exposition and nobody reads them. The switch
        # is prometheus_client's own, process-wide, and the same for every app in the process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pollchat_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.polls = Counter(
            "pollchat_polls",
            "Polls answered, by outcome: data, empty or not_modified (304).",
            ["outcome"],
            registry=self.registry,
        )
        # The children polls use, kept: ``labels()`` takes a lock and builds a key each call.
        self.poll_outcomes = {outcome: self.polls.labels(outcome) for outcome in ("data", "empty", "not_modified")}
        # Read when scraped (``set_function``): parking a poll must not take a metric's lock.
        self.parked = Gauge("pollchat_parked_long_polls", "Long polls waiting now.", registry=self.registry)
        self.wake_latency = Histogram(
            "pollchat_wake_latency_seconds",
            "From a commit's notification to a woken long poll's answer.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.messages_stored = Counter(
            "pollchat_messages_stored",
            "Messages stored (replays not counted), by type.",
            ["type"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "pollchat_rate_limited",
            "Requests refused by a rate limit, by kind.",
            ["kind"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class RequestCounter:
    """Counts answered requests by method, route template and status."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # prometheus_client's labels() takes a lock and builds a key on every call: keep the
        # children, whose set is small (methods x routes x statuses).
        self._counters: dict[tuple[str, str, int], Any] = {}

    def count(self, method: str, template: str, status: int) -> None:
        """One more request answered."""
        key = (method, template, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(method, template, str(status))
        counter.inc()
