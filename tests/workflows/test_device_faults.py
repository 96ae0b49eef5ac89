"""Every injected device fault ends in a recorded outcome, never a silent success."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from continuity.models import ChangeRecord, ChangeState, Decision
from continuity.stack import Stack
from lab.gear import Fault
from tests.conftest import TEST_TIMINGS, wait_until
from tests.workflows.helpers import decide_change, restore, start_change
from worker import build_worker

# Few, quick retries so a retryable fault gives up in seconds.
FAULT_TIMINGS = TEST_TIMINGS.model_copy(
    update={"ssh_attempts": 2, "ssh_retry_initial_s": 0.2, "ssh_step_timeout_s": 10}
)


@pytest_asyncio.fixture(scope="module")
async def fault_queue(stack: Stack) -> AsyncIterator[str]:
    """A worker whose SSH command timeout is short, so a hung device is noticed quickly."""
    queue = f"faults-{uuid.uuid4().hex[:6]}"
    settings = stack.settings.model_copy(
        update={"ssh_command_timeout_s": 1.5, "ssh_connect_timeout_s": 2.0, "task_queue": queue}
    )
    async with build_worker(stack.client, settings, stack.store, task_queue=queue):
        yield queue


async def _change(stack: Stack, queue: str, device: str, *, confirm: bool = False) -> ChangeRecord:
    handle = await start_change(stack, device, task_queue=queue, timings=FAULT_TIMINGS)
    if confirm:
        await decide_change(handle, Decision.CONFIRM)
    return await handle.result()


@pytest.mark.parametrize(
    ("device", "fault", "params", "error_type", "retryable"),
    [
        ("dt-agg-01", Fault.UNREACHABLE, {}, "DeviceUnreachable", True),
        ("kt-agg-01", Fault.AUTH_FAILURE, {}, "AuthenticationFailed", False),
        ("nh-agg-01", Fault.HANG, {"on": "ip route-static"}, "SessionLost", True),
        ("kt-edge-01", Fault.CLI_ERROR, {"on": "ip route"}, "CommandRejected", False),
        ("kt-core-01", Fault.SESSION_LIMIT, {"max_sessions": 0}, "SessionLimit", True),
    ],
    ids=lambda v: v.value if isinstance(v, Fault) else None,
)
async def test_device_fault_change_failed_with_typed_error_device_unchanged(
    stack, fault_queue, device, fault, params, error_type, retryable
):
    before = stack.network.devices[device].static_routes()
    stack.network.set_fault(device, fault, **params)
    try:
        rec = await _change(stack, fault_queue, device)
    finally:
        stack.network.set_fault(device, None)
    assert rec.state is ChangeState.FAILED
    assert rec.error_type == error_type, rec.error
    assert rec.retryable is retryable
    assert rec.error
    await wait_until(
        lambda: stack.network.devices[device].static_routes() == before,
        timeout_s=30,
        what=f"{device} back to its original routes",
    )
    assert not stack.network.devices[device].pending_revert()


async def test_slow_device_change_completes_and_is_confirmed(stack, fault_queue):
    device = "kt-agg-01"
    stack.network.set_fault(device, Fault.SLOW, delay_s=0.2)
    try:
        rec = await _change(stack, fault_queue, device, confirm=True)
    finally:
        stack.network.set_fault(device, None)
    assert rec.state is ChangeState.CONFIRMED, rec
    assert rec.verified
    # Leave the device as the rest of the session expects it: back on the primary paths.
    await restore(stack, device, task_queue=fault_queue)
