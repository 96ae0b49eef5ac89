"""Each platform through the DeviceChange workflow: confirmed, rejected, or never confirmed."""

from __future__ import annotations

import pytest

from continuity.audit import replay
from continuity.messages import Timings
from continuity.models import ChangeRecord, ChangeState, Decision
from continuity.stack import Stack
from tests.conftest import TEST_TIMINGS
from tests.workflows.helpers import decide_change, device_changes, start_change

DEVICE_OF = {
    "cisco_iosxe": "dt-agg-01",
    "juniper_junos": "kt-agg-01",
    "huawei_vrp": "dh-agg-01",
    "frr": "kt-edge-01",
}
# A confirmation window short enough that the device's own timer fires within seconds.
IMPATIENT = TEST_TIMINGS.model_copy(
    update={"confirm_window_s": 0.5, "verify_timeout_s": 3, "revert_margin_s": 1}
)


async def _run(
    stack: Stack,
    device: str,
    decision: Decision | None,
    *,
    direction: str = "reroute",
    timings: Timings = TEST_TIMINGS,
) -> ChangeRecord:
    handle = await start_change(stack, device, direction=direction, timings=timings)
    if decision is not None:
        await decide_change(handle, decision, operator="op-pham-quoc-dung")
    record = await handle.result()
    # Every path a change can take must replay deterministically against this code.
    outcome = await replay(await handle.fetch_history())
    assert outcome.ok, outcome.failure
    return record


def _on(stack: Stack, device: str, which: str) -> bool:
    routes = stack.network.devices[device].static_routes()
    return all(
        routes.get(c.path.prefix) == [getattr(c.path, which).address]
        for c in device_changes(stack, device)
    )


@pytest.mark.parametrize("platform", sorted(DEVICE_OF))
async def test_change_confirmed_device_on_backup_and_saved(stack, platform):
    device = DEVICE_OF[platform]
    rec = await _run(stack, device, Decision.CONFIRM)
    assert rec.state is ChangeState.CONFIRMED and rec.verified
    assert _on(stack, device, "backup")
    assert not stack.network.devices[device].pending_revert()
    saved = stack.network.devices[device].saved_config()
    assert all(c.path.backup.address in saved for c in device_changes(stack, device))
    back = await _run(stack, device, None, direction="restore")
    assert back.state is ChangeState.CONFIRMED
    assert _on(stack, device, "primary")


@pytest.mark.parametrize("platform", sorted(DEVICE_OF))
async def test_change_rejected_device_back_to_original(stack, platform):
    device = DEVICE_OF[platform]
    before = stack.network.devices[device].static_routes()
    rec = await _run(stack, device, Decision.REJECT)
    assert rec.state is ChangeState.ROLLED_BACK
    assert rec.decided_by == "op-pham-quoc-dung"
    assert stack.network.devices[device].static_routes() == before
    assert not stack.network.devices[device].pending_revert()


@pytest.mark.parametrize("platform", sorted(DEVICE_OF))
async def test_change_never_confirmed_reverted_by_device_or_orchestrator(stack, platform):
    device = DEVICE_OF[platform]
    before = stack.network.devices[device].static_routes()
    cid_state = await _run(stack, device, None, timings=IMPATIENT)
    expected = ChangeState.ROLLED_BACK if platform == "frr" else ChangeState.REVERTED_BY_DEVICE
    assert cid_state.state is expected, cid_state.events
    assert stack.network.devices[device].static_routes() == before
    assert not stack.network.devices[device].pending_revert()
