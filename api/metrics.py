"""GET /metrics in the Prometheus text format: the store's counts and the API's decision latency."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from continuity.checks import QueuePollers, queue_pollers
from continuity.errors import ContinuityError, DeviceError
from continuity.models import TERMINAL_CALL_STATUSES, ChangeState, Platform
from continuity.store import Store
from continuity.telephony import ACK_DIGIT

log = logging.getLogger(__name__)

# A scrape waits this long for Temporal's answer on the task queues, then reports them down.
_QUEUES_TIMEOUT_S = 5.0

# Every label value below comes from a closed vocabulary (states, platforms, levels, error
# classes, call statuses, HTTP codes); anything outside it is reported as "other". No incident
# id, person, device name or free text ever becomes a label: that is what lets /metrics go
# without a bearer token (api.access.PUBLIC), as Prometheus scrapers usually have none.
_OTHER = "other"
_CHANGE_STATES = frozenset(s.value for s in ChangeState)
_PLATFORMS = frozenset(p.value for p in Platform)
# Ours before Twilio's first answer, then Twilio's own call statuses.
_CALL_STATUSES = TERMINAL_CALL_STATUSES | {
    "creating",
    "queued",
    "initiated",
    "ringing",
    "in-progress",
}


def _subclasses(cls: type[Exception]) -> Iterator[type[Exception]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# DeviceLocked is our own store lease, refused before any session opens: never in a transcript.
_SSH_ERRORS = tuple(sorted({c.__name__ for c in _subclasses(DeviceError)} - {"DeviceLocked"}))
# Restoration levels the inventory allows (continuity.models.Circuit).
_LEVELS = ("1", "2", "3", "4", "5")
# Seconds: restoring a priority circuit takes seconds on a quiet device, and minutes when the
# operator's confirmation is slow; a confirmation window is 10 minutes by default.
_RESTORE_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
# The note NetworkActivities._session writes last into a failed session's transcript:
# "[continuity] <step> failed: <error type>: <message>".
_FAILURE_NOTE = re.compile(r"\[continuity\] \w+ failed: (\w+):")
# The handler whose requests the latency histogram times (api.routes.incidents).
_DECISION_ROUTE = "decide_change"


def _closed(value: str | None, vocabulary: Iterable[str]) -> str:
    return value if value is not None and value in vocabulary else _OTHER


def _ssh_error_type(tail: str) -> str:
    found = _FAILURE_NOTE.findall(tail)
    return found[-1] if found and found[-1] in _SSH_ERRORS else _OTHER


class StoreCollector(Collector):
    """The store's counts, read at each scrape (from prometheus_client's calling thread)."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store  # looked up per scrape: the app's lifespan may build it later

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "continuity_store_up", "Whether the store answered this scrape's queries (1) or not."
        )
        try:
            families = list(self._families(self._store()))
        except ContinuityError as e:  # StorageError: the other families still get served
            log.warning("metrics: the store did not answer: %s", e)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _families(self, store: Store) -> Iterator[Metric]:
        incidents = GaugeMetricFamily(
            "continuity_incidents",
            "Incidents the circuit ledger knows, by state: active (holding circuits or with "
            "device work to do), ending, closed (reports written).",
            labels=["state"],
        )
        for state, n in sorted(store.incident_counts().items()):
            incidents.add_metric([state], n)
        yield incidents

        changes = GaugeMetricFamily(
            "continuity_device_changes",
            "Device changes in the store, by their current state and the device's platform.",
            labels=["state", "platform"],
        )
        by_change: dict[tuple[str, str], int] = {}
        for state, platform, n in store.change_counts():
            key = (_closed(state, _CHANGE_STATES), _closed(platform, _PLATFORMS))
            by_change[key] = by_change.get(key, 0) + n
        for (state, platform), n in sorted(by_change.items()):
            changes.add_metric([state, platform], n)
        yield changes

        restore = HistogramMetricFamily(
            "continuity_time_to_restore_seconds",
            "Seconds from an incident's first circuit hold to a circuit settling on backup on "
            "every device (confirmed or kept), by the circuit's restoration level.",
            labels=["restoration_level"],
        )
        by_level: dict[str, list[float]] = {}
        for level, seconds in store.restore_times():
            by_level.setdefault(_closed(str(level), _LEVELS), []).append(seconds)
        for label, times in sorted(by_level.items()):
            buckets = [(str(b), float(sum(t <= b for t in times))) for b in _RESTORE_BUCKETS]
            buckets.append(("+Inf", float(len(times))))
            restore.add_metric([label], buckets, sum(times))
        yield restore

        ssh = CounterMetricFamily(
            "continuity_ssh_errors",
            "Device sessions that failed, one per attempt, by the error that ended them.",
            labels=["type"],
        )
        by_type = dict.fromkeys((*_SSH_ERRORS, _OTHER), 0)
        for tail in store.failed_session_tails():
            by_type[_ssh_error_type(tail)] += 1
        for kind, n in by_type.items():
            ssh.add_metric([kind], n)
        yield ssh

        calls = GaugeMetricFamily(
            "continuity_calls",
            "Duty officer calls placed, by their last status and whether the callee pressed "
            "the acknowledgement key.",
            labels=["status", "acknowledged"],
        )
        by_call: dict[tuple[str, str], int] = {}
        for status, digits, n in store.call_counts():
            key = (_closed(status, _CALL_STATUSES), str(digits == ACK_DIGIT).lower())
            by_call[key] = by_call.get(key, 0) + n
        for (status, acknowledged), n in sorted(by_call.items()):
            calls.add_metric([status, acknowledged], n)
        yield calls


class DecisionLatency:
    """Pure ASGI: times each request the decision route answered, to its last byte.

    The answer also says, in Server-Timing `app`, the milliseconds from its arrival here to
    its first byte (beside the route's own `claim` and `signal`)."""

    def __init__(self, app: ASGIApp, *, histogram: Histogram) -> None:
        self.app = app
        self._histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500  # unless the app answers: an exception's response comes from outside

        async def send_noting_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                if getattr(scope.get("route"), "name", None) == _DECISION_ROUTE:
                    took = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
                    headers = [*message.get("headers", []), (b"server-timing", took.encode())]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            # The router records the route it matched in the scope (api.deps reads it too):
            # the route's own name, so no copy of its path pattern is kept here.
            route = scope.get("route")
            if getattr(route, "name", None) == _DECISION_ROUTE:
                self._histogram.labels(code=str(code)).observe(time.perf_counter() - start)


async def watch_loop_lag(histogram: Histogram, *, tick_s: float = 0.1) -> None:
    """Until cancelled: observe how late each tick comes (a blocked loop delays every request)."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(tick_s)
        histogram.observe(max(0.0, loop.time() - start - tick_s))


class StatusReads(Collector):
    """How the incident status reads were answered (api.status_views): consoles × polls
    against one query per incident per `status_fresh_s`."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        views = getattr(self._app.state, "status_views", None)
        reads = CounterMetricFamily(
            "continuity_status_reads",
            "Incident status reads (GET /incidents/{id}) by how each was answered: rendered "
            "(the incident's workflow was asked) or shared (a fresh or concurrent rendering).",
            labels=["answer"],
        )
        reads.add_metric(["rendered"], views.rendered if views else 0)
        reads.add_metric(["shared"], views.shared if views else 0)
        yield reads


class WorkerQueues(Collector):
    """Whether a worker polls each task queue, as the route asked Temporal just before."""

    def __init__(self) -> None:
        self.latest: QueuePollers | None = None  # None: Temporal did not answer

    async def refresh(self, app: FastAPI) -> None:
        self.latest = None
        temporal = getattr(app.state, "temporal", None)
        if temporal is None:
            return
        try:
            sites = await asyncio.to_thread(app.state.store.device_sites)
            self.latest = await asyncio.wait_for(
                queue_pollers(temporal, app.state.settings, sites), _QUEUES_TIMEOUT_S
            )
        except Exception as e:  # noqa: BLE001 - a scrape reports, it does not fail
            log.warning("metrics: task queues not read: %s", e)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "continuity_task_queues_up",
            "Whether Temporal answered this scrape's question of who polls each task queue.",
        )
        latest = self.latest
        up.add_metric([], 0 if latest is None else 1)
        if latest is None:
            return [up]
        queues = GaugeMetricFamily(
            "continuity_task_queues",
            "Task queues by kind (incidents: the central one; devices: one per site with "
            "devices) and whether a worker polls them.",
            labels=["kind", "polled"],
        )
        sites = [n for _, n in latest.sites.values()]
        queues.add_metric(["incidents", "yes"], 1 if latest.central else 0)
        queues.add_metric(["incidents", "no"], 0 if latest.central else 1)
        queues.add_metric(["devices", "yes"], sum(1 for n in sites if n))
        queues.add_metric(["devices", "no"], sum(1 for n in sites if not n))
        return [up, queues]


def install_metrics(app: FastAPI) -> None:
    """Serve GET /metrics from a registry of this app's own, and time its decisions.

    Not the process-wide default registry: several apps in one process (the tests) would
    register the same names twice.
    """
    registry = CollectorRegistry()
    registry.register(StoreCollector(lambda: app.state.store))
    queues = WorkerQueues()
    registry.register(queues)
    registry.register(StatusReads(app))
    ProcessCollector(registry=registry)
    latency = Histogram(
        "continuity_decision_latency_seconds",
        "Seconds from a decision request's arrival to its response, by HTTP status.",
        ["code"],
        registry=registry,
    )
    app.add_middleware(DecisionLatency, histogram=latency)
    app.state.loop_lag = Histogram(
        "continuity_api_event_loop_lag_seconds",
        "How late the API's event loop woke from a 100 ms sleep: how long any request that"
        " arrived meanwhile waited before it was read.",
        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        registry=registry,
    )

    # Out of the schema: it is for Prometheus, not for the API's clients.
    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        await queues.refresh(app)  # Temporal is asked here: collectors run in a thread
        # The store is synchronous, and so is each collector: a thread, not the event loop.
        body = await asyncio.to_thread(encode, registry)
        return Response(body, headers={"Content-Type": content_type})


__all__ = [
    "DecisionLatency",
    "StatusReads",
    "StoreCollector",
    "WorkerQueues",
    "install_metrics",
    "watch_loop_lag",
]
