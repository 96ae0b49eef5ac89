"""GET /incidents/{id} as consoles poll it: screens share one reading of the incident per
`status_fresh_s`, an unchanged status is a 304, an order through the API makes the next read
new, and an error is never kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.status_views import EXPENSIVE_S, StatusViews
from app.stack import Stack
from continuity.models import IncidentPhase, Role

_AREA = "dak-ha"


@pytest_asyncio.fixture
async def slow_fresh(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The stack's store and Temporal behind an app whose readings stay fresh for 30 s."""
    settings = stack.settings.model_copy(update={"status_fresh_s": 30.0})
    app = create_app(settings, store=stack.store, temporal=stack.client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://continuity.test", timeout=30
    ) as client:
        yield client


async def _reads(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        s.labels["answer"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "continuity_status_reads_total"
    }


async def test_consoles_share_one_reading_until_an_order_makes_it_new(
    stack: Stack, slow_fresh: httpx.AsyncClient, auth
):  # type: ignore[no-untyped-def]
    api = slow_fresh
    r = await api.post(
        "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": _AREA}
    )
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    path = f"/incidents/{incident_id}"

    screens = await asyncio.gather(*(api.get(path, headers=auth(Role.OPERATOR)) for _ in range(5)))
    assert {s.status_code for s in screens} == {200}
    assert len({s.content for s in screens}) == 1 and len({s.headers["ETag"] for s in screens}) == 1
    assert await _reads(api) == {"rendered": 1, "shared": 4}
    etag = screens[0].headers["ETag"]

    again = await api.get(path, headers=auth(Role.AUDITOR) | {"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert (await api.get(path, headers=auth(Role.OPERATOR))).content == screens[0].content
    assert await _reads(api) == {"rendered": 1, "shared": 6}  # 30 s fresh: asked once

    r = await api.post(f"{path}/stand-down", headers=auth(Role.DUTY_OFFICER), json={"reason": "x"})
    assert r.status_code == 202, r.text
    after = await api.get(path, headers=auth(Role.OPERATOR) | {"If-None-Match": etag})
    assert after.status_code in (200, 304)
    assert await _reads(api) == {"rendered": 2, "shared": 6}  # the order made this one new
    result = await stack.client.get_workflow_handle(incident_id).result()
    assert result["phase"] == IncidentPhase.CLOSED


async def test_an_unknown_incident_is_404_each_time_never_a_kept_error(
    slow_fresh: httpx.AsyncClient, auth
):  # type: ignore[no-untyped-def]
    for _ in range(2):
        r = await slow_fresh.get("/incidents/INC-nobody", headers=auth(Role.OPERATOR))
        assert r.status_code == 404, r.text
    assert (await _reads(slow_fresh))["rendered"] == 2


async def test_fresh_zero_every_sequential_read_asks_the_incident(stack: Stack, auth):  # type: ignore[no-untyped-def]
    settings = stack.settings.model_copy(update={"status_fresh_s": 0.0})
    app = create_app(settings, store=stack.store, temporal=stack.client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://continuity.test", timeout=30
    ) as api:
        r = await api.post(
            "/incidents", headers=auth(Role.DUTY_OFFICER), json={"kind": "riot", "area": _AREA}
        )
        incident_id = r.json()["id"]
        for _ in range(3):
            assert (
                await api.get(f"/incidents/{incident_id}", headers=auth(Role.OPERATOR))
            ).status_code == 200
        assert await _reads(api) == {"rendered": 3, "shared": 0}
        await api.post(
            f"/incidents/{incident_id}/stand-down", headers=auth(Role.DUTY_OFFICER), json={}
        )
    await stack.client.get_workflow_handle(incident_id).result()


async def test_an_expensive_rendering_is_kept_as_long_as_it_took_orders_or_not() -> None:
    """A status read in pages (a thousand devices) takes seconds: renderings must not follow
    each other back to back however many orders come in, and cheap ones stay as they were."""
    views = StatusViews(fresh_s=0.0)
    took = {"s": EXPENSIVE_S * 1.2}
    count = 0

    async def render() -> bytes:
        nonlocal count
        count += 1
        mine = count
        await asyncio.sleep(took["s"])
        return f"reading {mine}".encode()

    body, _ = await views.read("INC-big", render)
    assert body == b"reading 1"
    views.forget("INC-big")  # an order: still kept as long again as it took
    assert (await views.read("INC-big", render))[0] == b"reading 1"
    # While a rendering is under way, an order does not start a second one beside it.
    await asyncio.sleep(took["s"] * 1.2)
    second = asyncio.ensure_future(views.read("INC-big", render))
    await asyncio.sleep(0.01)
    views.forget("INC-big")
    third = await views.read("INC-big", render)
    assert (await second)[0] == third[0] == b"reading 2" and count == 2

    # Cheap again: an order makes the very next read new, even one under way.
    took["s"] = EXPENSIVE_S / 5
    await asyncio.sleep(EXPENSIVE_S * 2.5)
    assert (await views.read("INC-big", render))[0] == b"reading 3"
    slow = asyncio.ensure_future(views.read("INC-big", render))
    await asyncio.sleep(0.01)
    views.forget("INC-big")
    assert (await views.read("INC-big", render))[0] == b"reading 5"
    assert (await slow)[0] == b"reading 4"
