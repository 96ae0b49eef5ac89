"""GET /metrics: a real incident on the lab, scraped before and after, against the store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.app import create_app
from api.metrics import watch_loop_lag
from app.stack import Stack
from continuity.models import IncidentPhase, IncidentStatus, Role
from continuity.settings import Settings
from continuity.store import CircuitHoldRow, Store
from lab.gear.base import Fault
from tests.conftest import wait_until

AREA = "dak-to"  # two circuits on one device (levels 1 and 4): two waves, two decisions
DEVICE = "dt-agg-01"
# The device errors a failed session's transcript can end with (continuity.errors).
SSH_ERRORS = (
    "AuthenticationFailed",
    "CommandRejected",
    "DeviceBusy",
    "DeviceUnreachable",
    "ForeignPendingCommit",
    "HostKeyRejected",
    "SessionLimit",
    "SessionLost",
    "VerificationFailed",
)

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def _parse(text: str) -> Samples:
    """Sample name -> labels -> value, as Prometheus would read the page."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


async def _scrape(api: httpx.AsyncClient) -> Samples:
    r = await api.get("/metrics")  # no token: a Prometheus scraper has none
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    return _parse(r.text)


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(frozenset(labels.items()), 0.0)


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


def _deltas(after: Samples, before: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    keys = set(after.get(name, {})) | set(before.get(name, {}))
    found = {k: after.get(name, {}).get(k, 0.0) - before.get(name, {}).get(k, 0.0) for k in keys}
    return {k: v for k, v in found.items() if v}


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


async def _confirm_until_active(api, auth, incident_id: str) -> Counter[int]:  # type: ignore[no-untyped-def]
    """Confirm every change listed as awaiting, once, as an operator's screen would; returns
    the status codes of the decision requests sent."""
    sent: Counter[int] = Counter()
    decided: set[str] = set()

    async def active() -> bool:
        r = await api.get(
            f"/incidents/{incident_id}/changes",
            params={"state": "awaiting_confirmation"},
            headers=auth(Role.OPERATOR),
        )
        for change in r.json():
            if change["change_id"] in decided:
                continue
            r = await api.post(
                f"/incidents/{incident_id}/changes/{change['change_id']}/decision",
                headers=auth(Role.OPERATOR),
                json={"decision": "confirm", "reason": "seen on the NOC wall"},
            )
            sent[r.status_code] += 1
            if r.status_code == 200:  # where its time went: the route's parts and the app's
                timing = dict(
                    m.strip().split(";dur=") for m in r.headers["Server-Timing"].split(",")
                )
                assert set(timing) == {"claim", "store", "signal", "app"}, timing
                assert all(float(ms) >= 0 for ms in timing.values())
                assert float(timing["app"]) >= float(timing["claim"]) + float(timing["signal"])
                # The store's part of the claim (the rest waited for a thread).
                assert float(timing["store"]) <= float(timing["claim"])
            decided.add(change["change_id"])
        r = await api.get(f"/incidents/{incident_id}", headers=auth(Role.AUDITOR))
        st = IncidentStatus.model_validate(r.json()["status"])
        return st.phase is IncidentPhase.ACTIVE and all(c.state.settled for c in st.changes)

    await wait_until(active, timeout_s=60, what="incident active")
    return sent


def _restore_seconds(stack: Stack, incident_id: str) -> dict[str, list[float]]:
    """Per restoration level, the seconds from the incident's first hold to each of its
    circuits' last reroute change confirmed, read straight from the store's rows."""
    with Session(stack.store.engine) as s:
        held = min(
            s.scalars(
                select(CircuitHoldRow.held_at).where(CircuitHoldRow.incident_id == incident_id)
            )
        )
    levels = {c.id: c.restoration_level for c in stack.store.inventory().circuits}
    done: dict[str, list[datetime]] = {}
    for row in stack.store.changes(incident_id):
        if row.direction == "reroute":
            assert row.state == "confirmed", row.change_id
            for cid in row.circuits:
                done.setdefault(cid, []).append(row.updated_at)
    out: dict[str, list[float]] = {}
    for cid, ats in done.items():
        out.setdefault(str(levels[cid]), []).append((max(ats) - held).total_seconds())
    return out


def _ssh_error_types(stack: Stack, incident_id: str) -> Counter[str]:
    """The error named in the last line of each failed session transcript of the incident."""
    found: Counter[str] = Counter()
    for t in stack.store.transcripts(incident_id):
        if t.status == "failed":
            last = t.text.rstrip().splitlines()[-1]
            found[next((e for e in SSH_ERRORS if f"failed: {e}:" in last), "other")] += 1
    return found


async def test_metrics_incident_on_lab_series_match_store(stack: Stack, api, auth):  # type: ignore[no-untyped-def]
    before = await _scrape(api)
    # The stack's worker polls the incidents' queue and the device queue of every site.
    sites = {d.site for d in stack.store.inventory().devices}
    assert _value(before, "continuity_task_queues_up") == 1
    assert _value(before, "continuity_task_queues", kind="incidents", polled="yes") == 1
    assert _value(before, "continuity_task_queues", kind="devices", polled="yes") == len(sites)
    assert (_labels(kind="devices", polled="no"), 0) in before["continuity_task_queues"].items()
    # The device refuses connections until the first apply has failed: one SSH error on record.
    stack.network.set_fault(DEVICE, Fault.UNREACHABLE)
    r = await api.post(
        "/incidents",
        headers=auth(Role.DUTY_OFFICER),
        json={"kind": "sabotage", "area": AREA, "description": "fibre cut at Dak To"},
    )
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    await wait_until(
        lambda: any(t.status == "failed" for t in stack.store.transcripts(incident_id)),
        timeout_s=15,
        interval_s=0.05,
        what="a failed session on record",
    )
    stack.network.set_fault(DEVICE, None)  # the activity's retry gets through

    sent = await _confirm_until_active(api, auth, incident_id)
    assert sent == Counter({200: 2}), sent  # one change per wave, each confirmed once

    during = await _scrape(api)
    assert _delta(during, before, "continuity_incidents", state="active") == 1

    r = await api.post(
        f"/incidents/{incident_id}/stand-down",
        headers=auth(Role.DUTY_OFFICER),
        json={"reason": "fibre spliced"},
    )
    assert r.status_code == 202, r.text
    await stack.client.get_workflow_handle(incident_id).result()
    after = await _scrape(api)

    assert _value(after, "continuity_store_up") == 1

    # Incidents: the one run here is closed (its reports are written), nothing else moved.
    assert _deltas(after, before, "continuity_incidents") == {_labels(state="closed"): 1}

    # Device changes: exactly this incident's rows, by state and the device's platform.
    platforms = {d.name: d.platform.value for d in stack.store.inventory().devices}
    rows = stack.store.changes(incident_id)
    assert {r.direction for r in rows} == {"reroute", "restore"}
    expected = Counter(_labels(state=r.state, platform=platforms[r.device]) for r in rows)
    assert _deltas(after, before, "continuity_device_changes") == expected

    # Time to restore: one observation per circuit, at the circuit's restoration level.
    restored = _restore_seconds(stack, incident_id)
    assert sorted(restored) == ["1", "4"]
    for level, seconds in restored.items():
        count = "continuity_time_to_restore_seconds_count"
        total = "continuity_time_to_restore_seconds_sum"
        assert _delta(after, before, count, restoration_level=level) == len(seconds)
        got = _delta(after, before, total, restoration_level=level)
        assert abs(got - sum(seconds)) < 1e-3, (level, got, seconds)
        assert 0 < got < 60
        inf = "continuity_time_to_restore_seconds_bucket"
        assert _delta(after, before, inf, restoration_level=level, le="+Inf") == len(seconds)

    # SSH errors: each failed session attempt of the incident, by the error that ended it.
    errors = _ssh_error_types(stack, incident_id)
    assert sum(errors.values()) >= 1
    assert _deltas(after, before, "continuity_ssh_errors_total") == {
        _labels(type=kind): n for kind, n in errors.items()
    }

    # Calls: this incident's, by status; the officer who pressed 1 is the acknowledged one.
    calls = stack.store.calls(incident_id)
    assert any(c.digits == "1" for c in calls)
    expected_calls = Counter(
        _labels(status=c.status, acknowledged="true" if c.digits == "1" else "false") for c in calls
    )
    assert _deltas(after, before, "continuity_calls") == expected_calls
    assert any(("acknowledged", "true") in k for k in expected_calls)

    # Decision latency: the two decisions, timed in the API, answered 200.
    latency = "continuity_decision_latency_seconds"
    assert _deltas(after, before, f"{latency}_count") == {_labels(code="200"): 2}
    assert 0 < _delta(after, before, f"{latency}_sum", code="200") < 10

    # The API's event loop is watched the whole time it runs: a tick every 100 ms.
    lag = "continuity_api_event_loop_lag_seconds_count"
    assert _delta(after, before, lag) >= 5

    # No label names an incident, a person, a device or carries free text.
    inv = stack.store.inventory()
    people = {p for o in [*inv.duty_officers, *inv.operators] for p in (o.id, o.name)}
    devices = set(platforms)
    words = {incident_id, *people, *devices, "fibre", "NOC", "Dak To"}
    values = {v for series in after.values() for labels in series for _, v in labels}
    assert values and not {v for v in values for w in words if w.lower() in v.lower()}


def _app(tmp_path: Path, name: str) -> httpx.AsyncClient:
    store = Store(f"sqlite:///{tmp_path / name}.db")
    store.create_schema()
    app = create_app(Settings(), store=store)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


async def test_metrics_two_apps_one_process_each_counts_only_its_own_decisions(tmp_path: Path):
    async with _app(tmp_path, "a") as a, _app(tmp_path, "b") as b:
        # Refused without a token: still a decision request, timed with its status.
        r = await a.post("/incidents/INC-x/changes/chg-x/decision", json={"decision": "confirm"})
        assert r.status_code == 401
        assert (await a.post("/incidents", json={})).status_code == 401  # not a decision
        seen_a = _parse((await a.get("/metrics")).text)
        seen_b = _parse((await b.get("/metrics")).text)
    count = "continuity_decision_latency_seconds_count"
    assert seen_a[count] == {_labels(code="401"): 1}
    assert count not in seen_b
    assert _value(seen_a, "continuity_store_up") == _value(seen_b, "continuity_store_up") == 1


async def test_metrics_store_unreadable_store_down_latency_still_served(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'empty'}.db")  # no schema: every query fails
    app = create_app(Settings(), store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        await c.post("/incidents/INC-x/changes/chg-x/decision", json={"decision": "confirm"})
        r = await c.get("/metrics")
    assert r.status_code == 200
    seen = _parse(r.text)
    assert _value(seen, "continuity_store_up") == 0
    assert "continuity_incidents" not in seen
    # No Temporal to ask (this app never connected): said, and no queue counts are made up.
    assert _value(seen, "continuity_task_queues_up") == 0
    assert "continuity_task_queues" not in seen
    assert _value(seen, "continuity_decision_latency_seconds_count", code="401") == 1


async def test_loop_lag_blocked_loop_is_observed_as_late_ticks():
    registry = CollectorRegistry()
    lag = Histogram("lag_seconds", "test", buckets=(0.01, 0.25, 1.0), registry=registry)
    watch = asyncio.create_task(watch_loop_lag(lag, tick_s=0.01))
    await asyncio.sleep(0.05)  # ticks on time
    time.sleep(0.3)  # noqa: ASYNC251 - the point: something blocks the loop
    await asyncio.sleep(0.05)
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    buckets = {
        s.labels["le"]: s.value
        for s in next(iter(registry.collect())).samples
        if s.name == "lag_seconds_bucket"
    }
    assert buckets["0.01"] >= 1  # the ticks before the block came on time
    assert buckets["+Inf"] - buckets["0.25"] == 1  # the one that waited out the block
