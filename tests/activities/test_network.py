"""Network activities against the simulated lab over real SSH and a real store, per platform."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import asyncssh
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from continuity.dialects import dialect_for
from continuity.errors import DeviceLocked
from continuity.messages import ChangeStepInput, DeviceStepInput, StepClaim
from continuity.models import (
    ChangeState,
    Circuit,
    CircuitPath,
    Decision,
    Inventory,
    NextHop,
    PartState,
    Platform,
    RouteChange,
)
from continuity.store import TranscriptRow
from lab.gear import Fault, LabTerminal
from lab.gear.network import generate_inventory
from tests.activities.conftest import (
    DECLARER,
    DEVICE_OF,
    INCIDENT,
    OPERATOR,
    PASSWORD,
    QUICK,
    Lab,
    LabFactory,
    attempt,
    decided,
    execution,
    timed_out,
)
from tests.conftest import wait_until

PRIMARY, BACKUP = "192.0.2.1", "198.51.100.1"
PREFIX = "10.20.0.0/16"
NATIVE = [Platform.CISCO_IOSXE, Platform.JUNIPER_JUNOS, Platform.HUAWEI_VRP]
LINE_BY_LINE = [Platform.CISCO_IOSXE, Platform.FRR]
ALL = list(Platform)
HANG_TIMEOUT_S = 0.6

# An operator's own change with a device timer, typed by hand: someone else's pending commit.
FOREIGN_ARM = {
    Platform.CISCO_IOSXE: [
        "configure terminal revert timer 5",
        "ip route 10.99.0.0 255.255.0.0 198.51.100.1",
        "end",
    ],
    Platform.JUNIPER_JUNOS: [
        "configure",
        "set routing-options static route 10.99.0.0/16 next-hop 198.51.100.1",
        "commit confirmed 5",
        "exit configuration-mode",
    ],
    Platform.HUAWEI_VRP: [
        "system-view",
        "ip route-static 10.99.0.0 16 198.51.100.1",
        "commit trial 300",
        "return",
    ],
}


# --- what the device and the store show ------------------------------------------------------


def routes(lab: Lab, platform: Platform, prefix: str = PREFIX) -> list[str]:
    return lab.gear(platform).static_routes().get(prefix, [])


def pending(lab: Lab, platform: Platform) -> bool:
    return lab.gear(platform).pending_revert()


def policy_attached(lab: Lab, platform: Platform, circuit_id: str) -> bool:
    return f"CT-{circuit_id}" in lab.gear(platform).running_config()


def on_backup(lab: Lab, platform: Platform, inp: DeviceStepInput) -> bool:
    """Every change of `inp` on its backup path, as the device's own state says."""
    return all(
        policy_attached(lab, platform, c.circuit_id)
        if c.path.source_prefix
        else routes(lab, platform, c.path.prefix) == [BACKUP]
        for c in lab.changes_of(inp)
    )


def running(lab: Lab, platform: Platform) -> list[str]:
    """The running configuration, line order aside (Junos lists statements as they came)."""
    return sorted(lab.gear(platform).running_config().splitlines())


def saved(lab: Lab, platform: Platform) -> list[str]:
    return sorted(lab.gear(platform).saved_config().splitlines())


def part(lab: Lab, platform: Platform, circuit_id: str) -> str | None:
    row = lab.store.part_rows(DEVICE_OF[platform], [circuit_id]).get(circuit_id)
    return row.state if row else None


def typed(lab: Lab, platform: Platform, since: int) -> list[str]:
    """Configuration lines the device received since `since` (reads and paging left out)."""
    dialect = dialect_for(platform)
    reads = {*dialect.state_commands(), *dialect.on_open}
    return [x for x in lab.gear(platform).received[since:] if x.strip() not in reads]


def mark(lab: Lab, platform: Platform) -> int:
    return len(lab.gear(platform).received)


def make_line(platform: Platform, changes: list[RouteChange]) -> str:
    """The line that adds the first change's backup next hop."""
    return dialect_for(platform).render_apply(changes, direction="reroute", revert_s=60).make[0]


def lock_free(lab: Lab, platform: Platform) -> bool:
    """Another incident could take the device now."""
    other, _ = lab.store.lock_device(
        device=DEVICE_OF[platform], holder="inc-probe", lease_s=1, now=time.time()
    )
    if other is None:
        lab.store.unlock_device(device=DEVICE_OF[platform], holder="inc-probe")
    return other is None


def rows(lab: Lab, step: str = "apply", change_id: str = "change-1") -> list[TranscriptRow]:
    return lab.store.step_transcripts(change_id, step)


async def failure(run: Awaitable[Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run
    return info.value


def details(err: ApplicationError) -> dict[str, Any]:
    assert err.details and isinstance(err.details[0], dict), err.details
    return err.details[0]


def stored(lab: Lab, refs: list[dict[str, Any]]) -> list[TranscriptRow]:
    """The transcript rows failure details point at, each matching its digest."""
    out = []
    for ref in refs:
        row = lab.store.transcript(ref["id"])
        assert row is not None and row.sha256 == ref["sha256"], ref
        out.append(row)
    return out


async def operator_types(lab: Lab, platform: Platform, lines: list[str]) -> None:
    """An operator's interactive session, outside continuity."""
    term = await LabTerminal.open(
        lab.device(platform).port, known_hosts=lab.server.known_hosts_path, password=PASSWORD
    )
    async with term:
        for line in lines:
            await term.send(line)


async def reroute_confirmed(
    lab: Lab, env: ActivityEnvironment, platform: Platform, **kw: Any
) -> DeviceStepInput:
    inp = lab.step(platform, **kw)
    await env.run(lab.activities.apply_device_change, inp)
    res = await env.run(
        lab.activities.confirm_device_change, decided(Decision.CONFIRM, change_id=inp.change_id)
    )
    assert res.state is ChangeState.CONFIRMED, res
    return inp


# --- reroute, confirm, restore ----------------------------------------------------------------


@pytest.mark.parametrize("pbr", [False, True], ids=["static", "pbr"])
@pytest.mark.parametrize("platform", ALL)
async def test_reroute_confirm_restore_round_trip_device_and_store_agree(
    lab: Lab, env: ActivityEnvironment, platform: Platform, pbr: bool
) -> None:
    a, gear, name = lab.activities, lab.gear(platform), DEVICE_OF[platform]
    inp = lab.step(platform, pbr=pbr)
    (cid,) = [c.circuit_id for c in lab.changes_of(inp)]
    running_before, saved_before = running(lab, platform), saved(lab, platform)

    applied = await env.run(a.apply_device_change, inp)

    assert applied.state is ChangeState.AWAITING_CONFIRMATION and applied.verified
    assert applied.deadline is not None and applied.deadline > datetime.now(UTC)
    assert on_backup(lab, platform, inp)
    assert pending(lab, platform) is (platform in NATIVE)
    assert applied.auto_revert == ("device" if platform in NATIVE else "orchestrator")
    assert applied.parts == {cid: PartState.BACKUP_UNCONFIRMED}
    assert part(lab, platform, cid) == "backup_unconfirmed"
    row = lab.store.change("change-1")
    assert row is not None and row.state == "awaiting_confirmation" and row.deadline is not None
    if platform in NATIVE:
        assert lab.store.armed_by(name) == "change-1"  # written before the arm went out

    confirmed = await env.run(a.confirm_device_change, decided(Decision.CONFIRM))

    assert confirmed.state is ChangeState.CONFIRMED and confirmed.verified
    assert on_backup(lab, platform, inp) and not pending(lab, platform)
    assert saved(lab, platform) != saved_before and (BACKUP in gear.saved_config() or pbr)
    assert part(lab, platform, cid) == "backup"
    assert lab.store.change("change-1").state == "confirmed"  # type: ignore[union-attr]
    assert lab.store.armed_by(name) is None and lock_free(lab, platform)

    restored = await env.run(a.apply_device_change, lab.restore(platform, pbr=pbr))

    assert restored.state is ChangeState.CONFIRMED and restored.verified
    assert restored.parts == {cid: PartState.PRIMARY} and part(lab, platform, cid) == "primary"
    assert running(lab, platform) == running_before and saved(lab, platform) == saved_before
    assert not pending(lab, platform) and lock_free(lab, platform)


@pytest.mark.parametrize("platform", ALL)
async def test_reroute_with_primary_link_cut_removes_primary_from_config(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    gear = lab.gear(platform)
    lab.net.cut_link(gear.name, gear.interface_for(PRIMARY).name)  # type: ignore[union-attr]

    applied = await env.run(lab.activities.apply_device_change, lab.step(platform))

    assert applied.state is ChangeState.AWAITING_CONFIRMATION
    assert routes(lab, platform) == [BACKUP]  # the dead primary is gone from the config too


@pytest.mark.parametrize("platform", LINE_BY_LINE)
async def test_reroute_backup_never_forwards_primary_kept_and_change_failed(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    # Make before break: a backup that never forwards must not cost the circuit its primary.
    gear = lab.gear(platform)
    lab.net.cut_link(gear.name, gear.interface_for(BACKUP).name)  # type: ignore[union-attr]
    inp = lab.step(platform)

    res = await env.run(lab.activities.apply_device_change, inp)

    assert res.state is ChangeState.FAILED and "never became active" in res.detail
    assert routes(lab, platform) == [PRIMARY]
    assert not pending(lab, platform)
    assert part(lab, platform, lab.changes_of(inp)[0].circuit_id) == "primary"
    assert lab.store.change("change-1").state == "failed"  # type: ignore[union-attr]
    assert lock_free(lab, platform)


# --- undo -------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_reroute_rejected_undo_back_to_original(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    inp = lab.step(platform, pbr=None)  # the static and the policy route together
    before = running(lab, platform)
    applied = await env.run(a.apply_device_change, inp)

    res = await env.run(a.undo_device_change, decided(Decision.REJECT))

    assert res.state is ChangeState.ROLLED_BACK and res.verified
    # The result carries the change's whole record: the apply's session and lines, then ours.
    assert res.transcripts[: len(applied.transcripts)] == applied.transcripts
    assert res.commands[: len(applied.commands)] == applied.commands
    assert [t.step for t in res.transcripts] == ["apply", "undo"]
    assert running(lab, platform) == before and not pending(lab, platform)
    assert all(part(lab, platform, c.circuit_id) == "primary" for c in lab.changes_of(inp))
    row = lab.store.change("change-1")
    assert row is not None and row.state == "rolled_back"
    assert (row.decision, row.decided_by) == ("reject", OPERATOR)
    assert lock_free(lab, platform)


@pytest.mark.parametrize("platform", NATIVE)
async def test_undo_on_timeout_device_reverts_by_itself_nothing_sent(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    await env.run(a.apply_device_change, lab.step(platform, timings=QUICK))
    before = mark(lab, platform)
    started = time.monotonic()

    res = await env.run(a.undo_device_change, timed_out(let_device_revert=True, timings=QUICK))

    assert res.state is ChangeState.REVERTED_BY_DEVICE, res.detail
    assert routes(lab, platform) == [PRIMARY] and not pending(lab, platform)
    assert typed(lab, platform, before) == []
    assert [r.sent for r in rows(lab, "undo")] == [[]]
    assert any("was not confirmed" in x for x in lab.gear(platform).log)
    assert time.monotonic() - started < 3
    assert lab.store.change("change-1").closed_by == "timeout"  # type: ignore[union-attr]


async def test_undo_change_never_recorded_nothing_to_undo(
    lab: Lab, env: ActivityEnvironment
) -> None:
    # An ending cancelled the apply before it recorded the change (while it took the lock).
    res = await env.run(lab.activities.undo_device_change, timed_out(change_id="change-9"))

    assert res.state is ChangeState.SKIPPED and res.commands == []


async def test_frr_undo_on_timeout_orchestrator_sends_inverse(
    lab: Lab, env: ActivityEnvironment
) -> None:
    a = lab.activities
    await env.run(a.apply_device_change, lab.step(Platform.FRR, timings=QUICK))

    res = await env.run(a.undo_device_change, timed_out(let_device_revert=True, timings=QUICK))

    assert res.state is ChangeState.ROLLED_BACK
    assert routes(lab, Platform.FRR) == [PRIMARY]
    assert f"no ip route {PREFIX} {BACKUP}" in res.commands


# --- idempotency ------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_apply_retried_after_success_sends_nothing_twice(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, gear = lab.activities, lab.gear(platform)
    inp = lab.step(platform, pbr=None)
    first = await env.run(a.apply_device_change, inp)
    running, log, before = gear.running_config(), list(gear.log), mark(lab, platform)

    attempt(env, 2)
    again = await env.run(a.apply_device_change, inp)

    assert first.commands and not first.already_applied
    assert again.already_applied and again.state is ChangeState.AWAITING_CONFIRMATION
    # The retry only read: nothing configured, no timer re-armed, nothing in the device's log.
    assert typed(lab, platform, before) == []
    assert gear.running_config() == running and gear.log == log
    (_, second) = rows(lab)
    assert second.attempt == 2 and second.sent == []
    assert again.commands == first.commands  # every attempt's lines, each once
    assert [t.attempt for t in again.transcripts] == [1, 2]


@pytest.mark.parametrize("platform", ALL)
async def test_apply_executed_again_keeps_first_execution_transcript(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    # The workflow may schedule a step again (after a lock wait, a restore retried later):
    # attempts count from 1 again, and the first execution's record must survive.
    a = lab.activities
    inp = lab.step(platform)
    first = await env.run(a.apply_device_change, inp)

    execution(env, "2")
    again = await env.run(a.apply_device_change, inp)

    (ref,) = first.transcripts
    row = lab.store.transcript(ref.id)
    assert row is not None and row.sha256 == ref.sha256 and row.sent == first.commands
    assert again.already_applied and again.commands == first.commands  # nothing new sent
    assert [t.id for t in again.transcripts] == [ref.id, rows(lab)[1].id]


async def interrupted_make(lab: Lab, platform: Platform, inp: DeviceStepInput) -> None:
    """What attempt 1 left: the backup added (IOS-XE: under its revert timer), primary kept."""
    name = DEVICE_OF[platform]
    lab.store.lock_device(device=name, holder=INCIDENT, lease_s=60, now=time.time())
    if platform is Platform.CISCO_IOSXE:
        lab.store.set_armed(device=name, holder=INCIDENT, change_id=inp.change_id)
        enter = "configure terminal revert timer 5"
    else:
        enter = "configure terminal"
    await operator_types(lab, platform, [enter, make_line(platform, lab.changes_of(inp)), "end"])
    assert sorted(routes(lab, platform)) == [PRIMARY, BACKUP]


@pytest.mark.parametrize("platform", LINE_BY_LINE)
async def test_apply_after_interrupted_make_sends_only_the_break(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    inp = lab.step(platform)
    await interrupted_make(lab, platform, inp)
    before = mark(lab, platform)

    attempt(env, 2)
    res = await env.run(lab.activities.apply_device_change, inp)

    assert res.state is ChangeState.AWAITING_CONFIRMATION
    sent = typed(lab, platform, before)
    assert [x for x in sent if BACKUP in x] == []
    assert [x for x in sent if PRIMARY in x] == [
        f"no ip route 10.20.0.0 255.255.0.0 {PRIMARY}"
        if platform is Platform.CISCO_IOSXE
        else f"no ip route {PREFIX} {PRIMARY}"
    ]
    assert not [x for x in sent if "revert timer" in x]  # its own timer still runs
    assert routes(lab, platform) == [BACKUP]


@pytest.mark.parametrize("platform", LINE_BY_LINE)
async def test_apply_after_interrupted_make_backup_dead_primary_kept(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    # Only the break is left to send, and the backup it relies on does not forward.
    inp = lab.step(platform)
    await interrupted_make(lab, platform, inp)
    gear = lab.gear(platform)
    lab.net.cut_link(gear.name, gear.interface_for(BACKUP).name)  # type: ignore[union-attr]
    before = mark(lab, platform)

    attempt(env, 2)
    res = await env.run(lab.activities.apply_device_change, inp)

    assert res.state is ChangeState.FAILED
    assert not [x for x in typed(lab, platform, before) if x.startswith("no ") and PRIMARY in x]
    assert routes(lab, platform) == [PRIMARY]  # the backup taken away again
    assert not pending(lab, platform)


@pytest.mark.parametrize("platform", ALL)
async def test_confirm_retried_after_success_only_persists(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    await env.run(a.apply_device_change, lab.step(platform))
    await env.run(a.confirm_device_change, decided(Decision.CONFIRM))
    before = mark(lab, platform)

    attempt(env, 2)
    again = await env.run(a.confirm_device_change, decided(Decision.CONFIRM))

    assert again.state is ChangeState.CONFIRMED
    dialect = dialect_for(platform)
    assert [x for x in typed(lab, platform, before) if x not in ("Y", "")] == list(
        dialect.persist_commands
    )
    assert routes(lab, platform) == [BACKUP]


@pytest.mark.parametrize("platform", NATIVE)
async def test_confirm_after_device_reverted_reports_reverted_by_device(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, gear = lab.activities, lab.gear(platform)
    inp = lab.step(platform, timings=QUICK)
    await env.run(a.apply_device_change, inp)
    # The operator's confirmation is claimed in time (as the API does) but reaches the device late.
    lab.store.claim_decision(
        incident_id=INCIDENT,
        change_id="change-1",
        decision=Decision.CONFIRM,
        operator=OPERATOR,
        reason="",
        now=datetime.now(UTC),
    )
    await gear.wait_for_revert(within_s=5)

    res = await env.run(a.confirm_device_change, decided(Decision.CONFIRM, timings=QUICK))

    assert res.state is ChangeState.REVERTED_BY_DEVICE
    assert routes(lab, platform) == [PRIMARY] and not pending(lab, platform)
    assert part(lab, platform, lab.changes_of(inp)[0].circuit_id) == "primary"
    assert lab.store.change("change-1").state == "reverted_by_device"  # type: ignore[union-attr]


# --- decisions: the store arbitrates ----------------------------------------------------------


@pytest.mark.parametrize("platform", [Platform.CISCO_IOSXE, Platform.FRR])
async def test_confirm_store_holds_other_decision_returns_it_device_untouched(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    await env.run(a.apply_device_change, lab.step(platform))
    lab.store.claim_decision(
        incident_id=INCIDENT,
        change_id="change-1",
        decision=Decision.REJECT,
        operator="op-2",
        reason="first",
        now=datetime.now(UTC),
    )
    before = len(lab.gear(platform).received)

    res = await env.run(a.confirm_device_change, decided(Decision.CONFIRM))

    assert res.decision is not None and res.refusal is None
    assert (res.decision.decision, res.decision.operator_id) == (Decision.REJECT, "op-2")
    assert lab.gear(platform).received[before:] == []  # no session at all
    assert routes(lab, platform) == [BACKUP] and pending(lab, platform) is (platform in NATIVE)
    assert lab.store.change("change-1").state == "awaiting_confirmation"  # type: ignore[union-attr]


async def test_undo_on_timeout_store_holds_decision_returns_it(
    lab: Lab, env: ActivityEnvironment
) -> None:
    a, platform = lab.activities, Platform.JUNIPER_JUNOS
    await env.run(a.apply_device_change, lab.step(platform))
    lab.store.claim_decision(
        incident_id=INCIDENT,
        change_id="change-1",
        decision=Decision.CONFIRM,
        operator=OPERATOR,
        reason="",
        now=datetime.now(UTC),
    )
    before = len(lab.gear(platform).received)

    res = await env.run(a.undo_device_change, timed_out(let_device_revert=True))

    assert res.decision is not None
    assert (res.decision.decision, res.decision.operator_id) == (Decision.CONFIRM, OPERATOR)
    assert lab.gear(platform).received[before:] == []
    assert routes(lab, platform) == [BACKUP] and pending(lab, platform)


async def test_confirm_by_declarer_refused_device_untouched(
    lab: Lab, env: ActivityEnvironment
) -> None:
    a, platform = lab.activities, Platform.HUAWEI_VRP
    await env.run(a.apply_device_change, lab.step(platform))
    before = len(lab.gear(platform).received)

    res = await env.run(a.confirm_device_change, decided(Decision.CONFIRM, by=DECLARER))

    assert res.refusal is not None and res.decision is None
    assert res.refusal.refusal == "SelfDecision" and res.refusal.operator_id == DECLARER
    assert res.state is ChangeState.AWAITING_CONFIRMATION
    assert lab.gear(platform).received[before:] == []
    assert pending(lab, platform) and routes(lab, platform) == [BACKUP]
    (attempt_row,) = lab.store.decision_attempts(INCIDENT)
    assert attempt_row.outcome == "SelfDecision"
    assert lab.store.change("change-1").decision is None  # type: ignore[union-attr]


async def test_confirm_claimed_by_activity_logged_as_accepted(
    lab: Lab, env: ActivityEnvironment
) -> None:
    a = lab.activities
    await env.run(a.apply_device_change, lab.step(Platform.FRR))

    await env.run(a.confirm_device_change, decided(Decision.CONFIRM))

    (row,) = lab.store.decision_attempts(INCIDENT)
    assert (row.operator, row.decision, row.outcome) == (OPERATOR, "confirm", "accepted")


# --- someone else's pending commit ------------------------------------------------------------


@pytest.mark.parametrize("platform", NATIVE)
async def test_apply_foreign_pending_commit_refused_nothing_sent(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    await operator_types(lab, platform, FOREIGN_ARM[platform])
    assert pending(lab, platform)
    before = mark(lab, platform)
    inp = lab.step(platform)

    err = await failure(env.run(lab.activities.apply_device_change, inp))

    assert err.type == "ForeignPendingCommit" and err.non_retryable
    assert typed(lab, platform, before) == []
    assert pending(lab, platform) and routes(lab, platform) == [PRIMARY]  # never confirmed by us
    d = details(err)
    assert d["commands"] == []
    (row,) = stored(lab, d["transcripts"])
    shown = dialect_for(platform).pending_command
    assert shown is not None and shown in row.text  # the evidence of what we saw
    assert "apply failed: ForeignPendingCommit" in row.text
    assert lab.store.change("change-1").state == "refused"  # type: ignore[union-attr]
    assert part(lab, platform, lab.changes_of(inp)[0].circuit_id) is None  # never applying
    assert lock_free(lab, platform)


@pytest.mark.parametrize("platform", NATIVE)
async def test_apply_retried_after_its_own_arm_not_refused(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    name = DEVICE_OF[platform]
    lab.store.lock_device(device=name, holder=INCIDENT, lease_s=60, now=time.time())
    lab.store.set_armed(device=name, holder=INCIDENT, change_id="change-1")
    await operator_types(lab, platform, FOREIGN_ARM[platform])  # stands in for attempt 1

    attempt(env, 2)
    res = await env.run(lab.activities.apply_device_change, lab.step(platform))

    assert res.state is ChangeState.AWAITING_CONFIRMATION
    assert routes(lab, platform) == [BACKUP] and pending(lab, platform)


async def test_confirm_pending_commit_not_ours_never_confirmed(
    lab: Lab, env: ActivityEnvironment
) -> None:
    # Our change is in place, but the device's running timer is not recorded as ours (ours
    # fired and someone re-armed one): confirming would accept their change too.
    a, platform = lab.activities, Platform.CISCO_IOSXE
    await env.run(a.apply_device_change, lab.step(platform))
    lab.store.set_armed(device="r1", holder=INCIDENT, change_id=None)
    before = mark(lab, platform)

    err = await failure(env.run(a.confirm_device_change, decided(Decision.CONFIRM)))

    assert err.type == "ForeignPendingCommit" and err.non_retryable
    assert typed(lab, platform, before) == [] and pending(lab, platform)


async def test_undo_change_gone_timer_not_ours_left_alone(
    lab: Lab, env: ActivityEnvironment
) -> None:
    # Our change reverted by itself; the trial now running is an operator's, and the store
    # does not name it ours. The undo is done without ending their trial.
    a, platform = lab.activities, Platform.HUAWEI_VRP
    await env.run(a.apply_device_change, lab.step(platform, timings=QUICK))
    await lab.gear(platform).wait_for_revert(within_s=5)
    lab.store.set_armed(device="r3", holder=INCIDENT, change_id=None)
    await operator_types(lab, platform, FOREIGN_ARM[platform])
    before = mark(lab, platform)

    stand_down = ChangeStepInput(
        incident_id=INCIDENT,
        change_id="change-1",
        claim=StepClaim(kind="order", by=DECLARER, reason="stood down"),
        timings=QUICK,
    )
    res = await env.run(a.undo_device_change, stand_down)

    assert res.state is ChangeState.ROLLED_BACK and "nothing sent" in res.detail
    assert typed(lab, platform, before) == []
    assert pending(lab, platform)  # their trial still runs
    assert routes(lab, platform) == [PRIMARY]


# --- the device lock --------------------------------------------------------------------------


async def test_apply_device_held_by_other_incident_device_locked_at_once(
    lab: Lab, env: ActivityEnvironment
) -> None:
    platform = Platform.CISCO_IOSXE
    lab.store.lock_device(device="r1", holder="inc-B", lease_s=60, now=time.time())
    before = len(lab.gear(platform).received)
    started = time.monotonic()

    err = await failure(
        asyncio.wait_for(env.run(lab.activities.apply_device_change, lab.step(platform)), 5)
    )

    assert err.type == "DeviceLocked" and err.non_retryable
    assert not DeviceLocked.retryable  # the workflow waits for the lock, Temporal does not retry
    assert "inc-B" in err.message
    assert time.monotonic() - started < 1
    assert lab.gear(platform).received[before:] == []  # no SSH slot, no session
    assert lab.store.change("change-1") is None


async def test_apply_same_incident_holding_lock_reenters(
    lab: Lab, env: ActivityEnvironment
) -> None:
    lab.store.lock_device(device="r4", holder=INCIDENT, lease_s=60, now=time.time())

    res = await env.run(lab.activities.apply_device_change, lab.step(Platform.FRR))

    assert res.state is ChangeState.AWAITING_CONFIRMATION


# --- other incidents: adopt, keep -------------------------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_reroute_parts_confirmed_by_other_incident_adopted_nothing_sent(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    await reroute_confirmed(lab, env, platform)
    before = mark(lab, platform)

    res = await env.run(
        lab.activities.apply_device_change,
        lab.step(platform, incident="inc-B", change_id="change-B"),
    )

    assert res.state is ChangeState.CONFIRMED and res.already_applied
    assert INCIDENT in res.detail
    assert typed(lab, platform, before) == [] and res.commands == []
    assert routes(lab, platform) == [BACKUP] and not pending(lab, platform)
    assert lab.store.change("change-B").state == "confirmed"  # type: ignore[union-attr]
    assert lock_free(lab, platform)


@pytest.mark.parametrize("platform", ALL)
async def test_restore_keeps_circuit_held_by_other_incident(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    inp = await reroute_confirmed(lab, env, platform, pbr=None)
    static = next(c.circuit_id for c in lab.changes_of(inp) if not c.path.source_prefix)
    pbr = next(c.circuit_id for c in lab.changes_of(inp) if c.path.source_prefix)
    lab.store.hold_circuits(INCIDENT, [static, pbr])
    lab.store.hold_circuits("inc-B", [static])

    res = await env.run(lab.activities.apply_device_change, lab.restore(platform, pbr=None))

    assert res.state is ChangeState.CONFIRMED
    assert res.kept == {static: ["inc-B"]}
    assert routes(lab, platform) == [BACKUP] and part(lab, platform, static) == "backup"
    assert not policy_attached(lab, platform, pbr) and part(lab, platform, pbr) == "primary"
    assert not pending(lab, platform)


def shared_route_inventory() -> Inventory:
    """generate_inventory's devices, each with a second circuit on the first one's route."""
    inv = generate_inventory(4)
    twins = [
        Circuit.model_validate({**c.model_dump(), "id": f"{c.id}-twin", "name": f"{c.name} (twin)"})
        for c in inv.circuits
    ]
    return inv.model_copy(update={"circuits": [*inv.circuits, *twins]})


@pytest.mark.parametrize("platform", ALL)
async def test_reroute_two_circuits_sharing_route_line_sent_once(
    make_lab: LabFactory, env: ActivityEnvironment, platform: Platform
) -> None:
    lab = await make_lab(shared_route_inventory())
    inp = lab.step(platform)
    ids = {c.circuit_id for c in lab.changes_of(inp)}
    assert len(ids) == 2

    res = await env.run(lab.activities.apply_device_change, inp)

    line = make_line(platform, lab.changes_of(inp))
    assert res.commands.count(line) == 1
    assert lab.gear(platform).received.count(line) == 1
    assert res.parts == dict.fromkeys(ids, PartState.BACKUP_UNCONFIRMED)
    assert set(res.parts) == ids
    assert routes(lab, platform) == [BACKUP]


@pytest.mark.parametrize("platform", ALL)
async def test_restore_shared_route_held_by_other_incident_kept(
    make_lab: LabFactory, env: ActivityEnvironment, platform: Platform
) -> None:
    lab = await make_lab(shared_route_inventory())
    inp = await reroute_confirmed(lab, env, platform)
    mine, theirs = sorted(c.circuit_id for c in lab.changes_of(inp))
    lab.store.hold_circuits(INCIDENT, [mine])
    lab.store.hold_circuits("inc-B", [theirs])
    before = mark(lab, platform)

    res = await env.run(lab.activities.apply_device_change, lab.restore(platform, circuits=[mine]))

    assert res.kept == {mine: ["inc-B"]}
    assert res.state is ChangeState.SKIPPED and res.commands == []
    assert typed(lab, platform, before) == []
    assert routes(lab, platform) == [BACKUP]
    assert part(lab, platform, mine) == part(lab, platform, theirs) == "backup"
    assert lock_free(lab, platform)


@pytest.mark.parametrize("platform", NATIVE)
async def test_restore_ends_own_pending_change_first_never_confirming_it(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    # An abort: the reroute of both circuits is still pending (its undo failed), and the
    # restore for one of them finds it first. It must end that change, not commit it.
    a = lab.activities
    before = running(lab, platform)
    inp = lab.step(platform, pbr=None)
    await env.run(a.apply_device_change, inp)
    static = next(c for c in lab.changes_of(inp) if not c.path.source_prefix)

    res = await env.run(a.apply_device_change, lab.restore(platform, circuits=[static.circuit_id]))

    assert res.state is ChangeState.CONFIRMED, res.detail
    assert not pending(lab, platform)
    assert "change-1" in res.detail
    assert running(lab, platform) == before  # the policy route went with its change
    assert lab.store.armed_by(DEVICE_OF[platform]) is None


# --- the record: write-ahead journal, transcripts ---------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_apply_journals_lines_before_sending_retry_references_both_attempts(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    inp = lab.step(platform)
    line = make_line(platform, lab.changes_of(inp))
    lab.net.set_fault(DEVICE_OF[platform], Fault.HANG, on=f"^{re.escape(line)}$")
    impatient = lab.with_settings(ssh_command_timeout_s=HANG_TIMEOUT_S)
    started = time.monotonic()
    run = asyncio.ensure_future(env.run(impatient.apply_device_change, inp))

    def sending() -> TranscriptRow | None:
        return next((r for r in rows(lab) if r.status == "sending"), None)

    row = await wait_until(sending, timeout_s=5, interval_s=0.01, what="the journal row")
    assert isinstance(row, TranscriptRow) and line in row.sent
    gear = lab.gear(platform)
    await wait_until(lambda: line in gear.received, timeout_s=5, interval_s=0.01, what="line")
    assert gear.received[-1] == line  # the device has it and says nothing more
    assert not run.done() and sending() is not None  # the row stands while the session hangs

    err = await failure(run)

    assert err.type == "SessionLost" and not err.non_retryable
    assert time.monotonic() - started < HANG_TIMEOUT_S + 2
    (first,) = stored(lab, details(err)["transcripts"])
    assert first.status == "failed" and line in first.sent
    assert details(err)["commands"] == first.sent

    lab.net.set_fault(DEVICE_OF[platform], None)
    attempt(env, 2)
    res = await env.run(lab.activities.apply_device_change, inp)

    assert res.state is ChangeState.AWAITING_CONFIRMATION
    assert [t.attempt for t in res.transcripts] == [1, 2]
    one, two = rows(lab)
    assert res.commands == [*one.sent, *two.sent] and line in two.sent
    assert routes(lab, platform) == [BACKUP]


async def test_apply_cancelled_mid_session_leaves_journal_row(lab: Lab) -> None:
    platform = Platform.JUNIPER_JUNOS
    inp = lab.step(platform)
    line = make_line(platform, lab.changes_of(inp))
    lab.net.set_fault(DEVICE_OF[platform], Fault.HANG, on=f"^{re.escape(line)}$")
    env = ActivityEnvironment()
    run = asyncio.ensure_future(env.run(lab.activities.apply_device_change, inp))
    await wait_until(lambda: rows(lab), timeout_s=5, interval_s=0.01, what="the journal row")
    gear = lab.gear(platform)
    await wait_until(lambda: line in gear.received, timeout_s=5, interval_s=0.01, what="line")
    # Let the echo be read first: Python 3.11's wait_for loses a cancel that races a read.
    await asyncio.sleep(0.2)

    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    (row,) = rows(lab)
    assert line in row.sent and row.status == "failed"
    assert "apply failed: CancelledError" in row.text

    # The ending's undo references the cancelled attempt, which never returned a result.
    lab.net.set_fault(DEVICE_OF[platform], None)
    ending = ChangeStepInput(
        incident_id=INCIDENT,
        change_id="change-1",
        claim=StepClaim(kind="order", by=DECLARER, reason="stood down"),
        timings=inp.timings,
    )
    undone = await ActivityEnvironment().run(lab.activities.undo_device_change, ending)
    assert row.id in {t.id for t in undone.transcripts} and line in undone.commands
    assert routes(lab, platform) == [PRIMARY]


@pytest.mark.parametrize("platform", ALL)
async def test_transcripts_never_contain_password(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    await env.run(a.apply_device_change, lab.step(platform))
    await env.run(a.undo_device_change, decided(Decision.REJECT))
    lab.net.set_fault(DEVICE_OF[platform], Fault.AUTH_FAILURE)
    fresh = lab.with_settings()  # no pooled session: this one must log in, and fails to
    await failure(env.run(fresh.apply_device_change, lab.step(platform, change_id="change-2")))

    texts = [r.text for r in lab.store.transcripts(INCIDENT)]
    assert len(texts) == 3 and all(texts)
    assert not [t for t in texts if PASSWORD in t]


@pytest.mark.parametrize("platform", ALL)
async def test_read_back_records_parts_as_device_shows(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    inp = lab.step(platform, pbr=None)
    static = next(c.circuit_id for c in lab.changes_of(inp) if not c.path.source_prefix)
    pbr = next(c.circuit_id for c in lab.changes_of(inp) if c.path.source_prefix)
    await reroute_confirmed(lab, env, platform, circuits=[static])
    ask = lab.read_back(platform, inp)

    execution(env, "read-1")
    read = await env.run(a.read_back_device, ask)

    assert read.parts == {static: PartState.BACKUP, pbr: PartState.PRIMARY}
    assert not read.pending
    assert part(lab, platform, static) == "backup" and part(lab, platform, pbr) == "primary"
    assert read.transcript is not None
    row = lab.store.transcript(read.transcript.id)
    assert row is not None and row.sha256 == read.transcript.sha256 and row.sent == []

    # Someone puts the primary back by hand: the device now shows both next hops.
    lab.gear(platform).running.add_route(PREFIX, PRIMARY)
    lab.gear(platform).config_changed()
    execution(env, "read-2")
    again = await env.run(a.read_back_device, ask)

    assert again.parts[static] is PartState.UNKNOWN and part(lab, platform, static) == "unknown"
    assert lab.store.transcript(read.transcript.id).sha256 == read.transcript.sha256  # type: ignore[union-attr]


@pytest.mark.parametrize("platform", NATIVE)
async def test_read_back_pending_change_is_unconfirmed(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    inp = lab.step(platform)
    await env.run(lab.activities.apply_device_change, inp)
    ask = lab.read_back(platform, inp)

    read = await env.run(lab.activities.read_back_device, ask)

    assert read.pending
    assert read.parts == {lab.changes_of(inp)[0].circuit_id: PartState.BACKUP_UNCONFIRMED}


# --- failures, as the retry policy sees them --------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "params", "error", "retryable"),
    [
        (Fault.UNREACHABLE, {}, "DeviceUnreachable", True),
        (Fault.AUTH_FAILURE, {}, "AuthenticationFailed", False),
        (Fault.HOST_KEY_CHANGE, {}, "HostKeyRejected", False),
        (Fault.SESSION_LIMIT, {"max_sessions": 0}, "SessionLimit", True),
    ],
    ids=["unreachable", "auth", "host-key", "session-limit"],
)
@pytest.mark.parametrize("platform", ALL)
async def test_apply_fault_typed_error_with_transcript_nothing_sent(
    lab: Lab,
    env: ActivityEnvironment,
    platform: Platform,
    fault: Fault,
    params: dict[str, Any],
    error: str,
    retryable: bool,
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], fault, **params)

    err = await failure(env.run(lab.activities.apply_device_change, lab.step(platform)))

    assert err.type == error and err.non_retryable is not retryable
    d = details(err)
    assert d["commands"] == []
    (row,) = stored(lab, d["transcripts"])
    assert f"apply failed: {error}" in row.text
    assert routes(lab, platform) == [PRIMARY]
    row_state = lab.store.change("change-1").state  # type: ignore[union-attr]
    # A retry may still come: the change is still being applied; else it failed, the lock goes.
    assert row_state == ("applying" if retryable else "failed")
    assert lock_free(lab, platform) is not retryable


@pytest.mark.parametrize("platform", ALL)
async def test_apply_cli_error_rejected_not_retryable_nothing_committed(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    before = running(lab, platform)
    lab.net.set_fault(DEVICE_OF[platform], Fault.CLI_ERROR)
    inp = lab.step(platform)

    err = await failure(env.run(lab.activities.apply_device_change, inp))

    assert err.type == "CommandRejected" and err.non_retryable
    assert running(lab, platform) == before
    d = details(err)
    assert make_line(platform, lab.changes_of(inp)) in d["commands"]
    (row,) = stored(lab, d["transcripts"])
    assert "apply failed: CommandRejected" in row.text
    # Lines went out: the part is unknown until the undo reads the device again.
    assert part(lab, platform, lab.changes_of(inp)[0].circuit_id) == "unknown"
    assert not lock_free(lab, platform)


async def test_apply_junos_configuration_locked_by_operator_busy_retryable(
    lab: Lab, env: ActivityEnvironment
) -> None:
    platform = Platform.JUNIPER_JUNOS
    term = await LabTerminal.open(
        lab.device(platform).port, known_hosts=lab.server.known_hosts_path, password=PASSWORD
    )
    async with term:
        await term.send("configure exclusive")

        err = await failure(env.run(lab.activities.apply_device_change, lab.step(platform)))

    assert err.type == "DeviceBusy" and not err.non_retryable
    assert "locked" in err.message
    assert routes(lab, platform) == [PRIMARY] and not pending(lab, platform)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prefix", "10.0.0.0/8; reload"),
        ("backup", NextHop.model_construct(address="198.51.100.1\nreload")),
    ],
    ids=["prefix", "next-hop"],
)
async def test_apply_injected_value_refused_before_connecting(
    lab: Lab, env: ActivityEnvironment, field: str, value: object
) -> None:
    inp = lab.step(Platform.CISCO_IOSXE, circuits=["r1-c1"])
    bad_path = CircuitPath.model_construct(**{**dict(lab.changes_of(inp)[0].path), field: value})
    bad = lab.variant(inp, path=bad_path)
    lab.net.set_fault("r1", Fault.UNREACHABLE)  # proves no connection was even tried

    err = await failure(env.run(lab.activities.apply_device_change, bad))

    assert err.type == "ValidationFailed" and err.non_retryable
    assert rows(lab) == [] and lab.store.change("change-1") is None
    assert lock_free(lab, Platform.CISCO_IOSXE)


async def test_apply_unknown_credential_not_retryable(lab: Lab, env: ActivityEnvironment) -> None:
    inp = lab.variant(lab.step(Platform.FRR), device={"credential": "nope"})

    err = await failure(env.run(lab.activities.apply_device_change, inp))

    assert err.type == "AuthenticationFailed" and err.non_retryable
    assert "nope" in err.message
    assert lock_free(lab, Platform.FRR)


async def test_apply_without_known_hosts_file_rejected_not_retryable(
    lab: Lab, env: ActivityEnvironment
) -> None:
    nowhere = lab.with_settings(known_hosts=lab.tmp / "absent")

    err = await failure(env.run(nowhere.apply_device_change, lab.step(Platform.CISCO_IOSXE)))

    assert err.type == "HostKeyRejected" and err.non_retryable
    (row,) = stored(lab, details(err)["transcripts"])
    assert "known_hosts" in row.text
    assert routes(lab, Platform.CISCO_IOSXE) == [PRIMARY]


async def test_apply_with_pinned_host_key_needs_no_known_hosts(
    lab: Lab, env: ActivityEnvironment
) -> None:
    inp = lab.step(Platform.FRR)
    port = f":{lab.device(Platform.FRR).port} "
    line = next(x for x in lab.server.known_hosts_path.read_text().splitlines() if port in x)
    nowhere = lab.with_settings(known_hosts=lab.tmp / "absent")

    pinned = lab.variant(inp, device={"host_key": line.split(" ", 1)[1]})
    res = await env.run(nowhere.apply_device_change, pinned)
    assert res.state is ChangeState.AWAITING_CONFIRMATION

    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = lab.variant(inp, device={"host_key": stranger})
    other = wrong.model_copy(update={"change_id": "change-2"})
    err = await failure(env.run(nowhere.apply_device_change, other))
    assert err.type == "HostKeyRejected" and err.non_retryable
