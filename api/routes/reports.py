"""The report upward, for auditors: a period's incidents from the archived bundles."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import AUTHORIZED, Principal, SettingsDep
from api.errors import Conflict, documented
from continuity.errors import ValidationFailed
from continuity.period import period_report, render_period

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=AUTHORIZED)


@router.get(
    "/period",
    response_class=Response,
    responses={
        200: {"content": {"text/markdown": {}}, "description": "the report, Markdown"},
        **documented(401, 403, 409, 422),
    },
)
async def period(
    _: Principal,
    settings: SettingsDep,
    start: Annotated[datetime, Query(alias="from")],
    end: Annotated[datetime, Query(alias="to")],
    lang: Literal["vi", "en"] = "vi",
) -> Response:
    """Every archived incident declared in [from, to): kind, area, circuits per priority class,
    time to restore per level, decisions, calls and time to acknowledge. Read from the signed
    bundles in CONTINUITY_ARCHIVE_DIR, not from the live database."""
    if settings.archive_dir is None:
        raise Conflict("no archive is configured (CONTINUITY_ARCHIVE_DIR)", type="NoArchive")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationFailed("from and to need a time zone, e.g. 2026-11-01T00:00:00+07:00")
    report = await asyncio.to_thread(period_report, settings.archive_dir, start, end)
    return Response(
        render_period(report, lang),
        media_type="text/markdown; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
