"""Debian's Chromium through Playwright, for the browser tests: one launch per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

try:
    from playwright.async_api import Browser, async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
NEEDS_CHROMIUM = [
    pytest.mark.skipif(
        async_playwright is None, reason="playwright is not installed (pip install playwright)"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    ),
]


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield b
        await b.close()


def needs_chromium(test):  # type: ignore[no-untyped-def]
    """Skip one test, with the reason, where the browser cannot run."""
    for mark in NEEDS_CHROMIUM:
        test = mark(test)
    return test
