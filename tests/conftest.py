"""Session fixtures: a real Temporal dev server and the embedded stack (lab, sandbox, API)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from app.stack import Stack, temporal_binary
from continuity.messages import Timings
from continuity.models import Role
from continuity.temporal import data_converter

# Durations short enough for tests; the lab's clocks run 60x so device-side
# minute timers (IOS-XE, Junos) take seconds.
LAB_TIME_SCALE = 60.0
TEST_TIMINGS = Timings(
    confirm_window_s=30,
    revert_margin_s=3,
    verify_timeout_s=5,
    revert_wait_grace_s=15,
    ssh_step_timeout_s=20,
    heartbeat_timeout_s=5,
    ring_timeout_s=5,
    escalation_delay_s=3,
    max_parallel_devices=4,
    device_time_scale=LAB_TIME_SCALE,
    drive_retry_max_s=2,
)


async def start_temporal_env(**dynamic_config: object) -> WorkflowEnvironment:
    """A Temporal dev server for tests: timers on a 10 ms grid instead of 1 s, so sub-second
    windows behave, and any further dynamic config values (name=value)."""
    values = {"history.timerProcessorMaxTimeShift": '"10ms"', **dynamic_config}
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=data_converter,
        dev_server_extra_args=[
            arg for k, v in values.items() for arg in ("--dynamic-config-value", f"{k}={v}")
        ],
    )


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_temporal_env()
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    s = Stack(
        data_dir=tmp_path_factory.mktemp("stack"),
        timings=TEST_TIMINGS,
        lab_time_scale=LAB_TIME_SCALE,
        temporal_client=temporal_env.client,
    )
    await s.start()
    from tests.workflows.helpers import use_attester  # here: helpers import this module

    use_attester(s.attester)
    # How every device looked before any test touched it: tests reset to this.
    s.lab_snapshot = {  # type: ignore[attr-defined]
        n: (d.running.copy(), d.saved.copy()) for n, d in s.network.devices.items()
    }
    yield s
    await s.stop()


@pytest_asyncio.fixture(scope="session")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture
def auth(stack: Stack) -> Callable[[Role], dict[str, str]]:
    def _auth(role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {stack.tokens[role]}"}

    return _auth


async def wait_until(
    predicate: Callable[[], object],
    *,
    timeout_s: float = 30,
    interval_s: float = 0.2,
    what: str = "condition",
) -> object:
    """Poll an async or sync predicate until it is truthy; fail with `what` after the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
