"""Each workflow test starts from the lab as the stack built it and an empty circuit ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from app.stack import Stack
from tests.workflows.helpers import finish_running_incidents, reset_lab


@pytest.fixture(scope="session")
def lab_snapshot(stack: Stack) -> dict[str, Any]:
    return stack.lab_snapshot  # type: ignore[attr-defined, no-any-return]


@pytest_asyncio.fixture(autouse=True)
async def clean_lab(stack: Stack, lab_snapshot: dict[str, Any]) -> AsyncIterator[None]:
    reset_lab(stack, lab_snapshot)
    yield
    await finish_running_incidents(stack)
    reset_lab(stack, lab_snapshot)
