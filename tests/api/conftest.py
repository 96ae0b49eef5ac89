"""Each API test starts from the lab as the stack built it and an empty circuit ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from app.stack import Stack
from tests.api.browser import browser  # noqa: F401 - a fixture for the browser tests
from tests.workflows.helpers import finish_running_incidents, reset_lab


@pytest_asyncio.fixture(autouse=True)
async def clean_lab(stack: Stack) -> AsyncIterator[None]:
    reset_lab(stack, stack.lab_snapshot)  # type: ignore[attr-defined]
    yield
    await finish_running_incidents(stack)
    reset_lab(stack, stack.lab_snapshot)  # type: ignore[attr-defined]
