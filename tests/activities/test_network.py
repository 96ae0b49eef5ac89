"""Network activities against the simulated lab over real SSH, one platform at a time."""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from continuity.dialects import dialect_for, revert_window_s
from continuity.errors import ValidationFailed
from continuity.messages import DeviceSessionInput, LockInput, VerifyInput
from continuity.models import CircuitPath, Platform, RouteChange
from continuity.ssh import SessionLimits, open_cli
from lab.gear import Fault
from tests.activities.conftest import DEVICE_OF, PASSWORD, TIMINGS, Lab

PRIMARY, BACKUP = "192.0.2.1", "198.51.100.1"
PREFIX = "10.20.0.0/16"
NATIVE = [Platform.CISCO_IOSXE, Platform.JUNIPER_JUNOS, Platform.HUAWEI_VRP]
LINE_BY_LINE = [Platform.CISCO_IOSXE, Platform.FRR]
ALL = list(Platform)
HANG_TIMEOUT_S = 0.6


def routes(lab: Lab, platform: Platform) -> list[str]:
    return lab.net.devices[DEVICE_OF[platform]].static_routes().get(PREFIX, [])


def pending(lab: Lab, platform: Platform) -> bool:
    return lab.net.devices[DEVICE_OF[platform]].pending_revert()


def changed(inp: DeviceSessionInput, timeout_s: float = 2) -> VerifyInput:
    return VerifyInput(session=inp, expect="changed", timeout_s=timeout_s)


def original(inp: DeviceSessionInput, timeout_s: float = 2) -> VerifyInput:
    return VerifyInput(session=inp, expect="original", timeout_s=timeout_s)


async def failure(env: ActivityEnvironment, fn: object, arg: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await env.run(fn, arg)  # type: ignore[arg-type]
    return info.value


# --- the happy paths ---------------------------------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_apply_verify_confirm_change_stays_and_is_saved(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform)
    applied = await env.run(a.apply_change, inp)
    verified = await env.run(a.verify_change, changed(inp))
    confirmed = await env.run(a.confirm_change, inp)

    assert verified.ok, verified.detail
    assert routes(lab, platform) == [BACKUP]
    assert not pending(lab, platform)
    assert BACKUP in lab.net.devices[DEVICE_OF[platform]].saved_config()
    assert confirmed.detail == "confirmed and saved" or platform is Platform.FRR
    # What was sent is what an auditor re-renders from the same inputs.
    dialect = dialect_for(platform)
    revert_s = revert_window_s(TIMINGS) * TIMINGS.device_time_scale
    rendered = dialect.render_apply(inp.changes, direction="reroute", revert_s=revert_s)
    assert applied.commands == rendered.commands()
    assert applied.auto_revert == ("device" if dialect.native_auto_revert else "orchestrator")


@pytest.mark.parametrize("platform", ALL)
async def test_apply_then_rollback_restores_original(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform)
    await env.run(a.apply_change, inp)
    assert routes(lab, platform) == [BACKUP]

    rolled = await env.run(a.rollback_change, inp)
    back = await env.run(a.verify_change, original(inp))

    assert back.ok, back.detail
    assert routes(lab, platform) == [PRIMARY]
    assert not pending(lab, platform)
    assert rolled.commands == (
        dialect_for(platform).render_rollback(inp.changes, "reroute")
        if platform in NATIVE
        else dialect_for(platform).render_inverse(inp.changes, "reroute")
    )


@pytest.mark.parametrize("platform", NATIVE)
async def test_apply_unconfirmed_device_reverts_by_itself(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform)
    started = time.monotonic()
    applied = await env.run(a.apply_change, inp)
    assert applied.auto_revert == "device"
    assert routes(lab, platform) == [BACKUP] and pending(lab, platform)
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    reverted = await env.run(a.await_device_revert, original(inp, timeout_s=5))

    assert reverted.ok, reverted.detail
    assert routes(lab, platform) == [PRIMARY]
    assert not pending(lab, platform)
    # The device's own timer did it, after the window it was given (60 device s = 1 s here).
    assert time.monotonic() - started >= 0.9 * applied.revert_deadline_s
    assert beats  # a long wait on a device is not mistaken for a dead worker


async def test_frr_apply_unconfirmed_orchestrator_rolls_back(
    lab: Lab, env: ActivityEnvironment
) -> None:
    a, inp = lab.activities, lab.session(Platform.FRR)
    applied = await env.run(a.apply_change, inp)
    assert applied.auto_revert == "orchestrator"
    assert applied.revert_deadline_s == revert_window_s(TIMINGS)

    await env.run(a.rollback_change, inp)
    back = await env.run(a.verify_change, original(inp))

    assert back.ok, back.detail
    assert routes(lab, Platform.FRR) == [PRIMARY]


@pytest.mark.parametrize("platform", ALL)
async def test_reroute_confirmed_then_restore_confirmed_returns_to_primary(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a = lab.activities
    out, back = lab.session(platform), lab.session(platform, direction="restore", change_id="c-2")
    await env.run(a.apply_change, out)
    await env.run(a.confirm_change, out)

    await env.run(a.apply_change, back)
    verified = await env.run(a.verify_change, changed(back))
    await env.run(a.confirm_change, back)

    assert verified.ok, verified.detail
    assert routes(lab, platform) == [PRIMARY]
    assert not pending(lab, platform)


@pytest.mark.parametrize("platform", ALL)
async def test_apply_with_primary_link_cut_still_removes_primary_route(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    device = lab.net.devices[DEVICE_OF[platform]]
    lab.net.cut_link(device.name, device.interface_for(PRIMARY).name)  # type: ignore[union-attr]
    a, inp = lab.activities, lab.session(platform)

    await env.run(a.apply_change, inp)
    verified = await env.run(a.verify_change, changed(inp))

    assert verified.ok, verified.detail
    assert routes(lab, platform) == [BACKUP]  # the dead primary is gone from the config too


@pytest.mark.parametrize("platform", LINE_BY_LINE)
async def test_apply_with_backup_link_cut_keeps_primary_route(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    # Make before break: a backup that never forwards must not cost the circuit its primary.
    device = lab.net.devices[DEVICE_OF[platform]]
    lab.net.cut_link(device.name, device.interface_for(BACKUP).name)  # type: ignore[union-attr]

    err = await failure(env, lab.activities.apply_change, lab.session(platform))

    assert err.type == "VerificationFailed" and err.non_retryable
    assert PRIMARY in routes(lab, platform)


@pytest.mark.parametrize("platform", ALL)
async def test_policy_route_apply_verify_rollback(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform, pbr=True)
    device = lab.net.devices[DEVICE_OF[platform]]
    before = device.running_config()

    await env.run(a.apply_change, inp)
    moved = await env.run(a.verify_change, changed(inp))
    assert moved.ok, moved.detail
    assert "CT-" in device.running_config()

    await env.run(a.rollback_change, inp)
    back = await env.run(a.verify_change, original(inp))

    assert back.ok, back.detail
    assert device.running_config() == before


# --- idempotency --------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_apply_twice_second_sends_nothing(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform)
    device = lab.net.devices[DEVICE_OF[platform]]
    first = await env.run(a.apply_change, inp)
    running, log = device.running_config(), list(device.log)
    second = await env.run(a.apply_change, inp)

    assert first.commands and not first.already_applied
    assert second.already_applied and second.commands == []
    # The retry only read: nothing configured, no timer re-armed, nothing in the device's log.
    assert device.running_config() == running and device.log == log
    assert routes(lab, platform) == [BACKUP]


@pytest.mark.parametrize("platform", LINE_BY_LINE)
async def test_apply_after_interrupted_make_sends_only_the_break(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    # A crash between make and break leaves both next hops configured.
    device = lab.net.devices[DEVICE_OF[platform]]
    device.running.add_route(PREFIX, BACKUP)
    device.config_changed()
    a, inp = lab.activities, lab.session(platform)

    applied = await env.run(a.apply_change, inp)

    assert not any(BACKUP in c for c in applied.commands)
    assert sum(PRIMARY in c for c in applied.commands) == 1
    assert routes(lab, platform) == [BACKUP]


@pytest.mark.parametrize("platform", ALL)
async def test_confirm_twice_second_only_persists(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform)
    await env.run(a.apply_change, inp)
    await env.run(a.confirm_change, inp)
    again = await env.run(a.confirm_change, inp)

    assert again.commands == list(dialect_for(platform).persist_commands)
    assert routes(lab, platform) == [BACKUP]


@pytest.mark.parametrize("platform", [Platform.CISCO_IOSXE, Platform.FRR])
async def test_rollback_twice_second_sends_nothing(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    a, inp = lab.activities, lab.session(platform)
    await env.run(a.apply_change, inp)
    await env.run(a.rollback_change, inp)
    again = await env.run(a.rollback_change, inp)

    assert again.commands == []
    assert routes(lab, platform) == [PRIMARY]


async def test_confirm_after_device_reverted_fails_not_retryable(
    lab: Lab, env: ActivityEnvironment
) -> None:
    a, inp = lab.activities, lab.session(Platform.CISCO_IOSXE)
    await env.run(a.apply_change, inp)
    reverted = await env.run(
        a.await_device_revert, VerifyInput(session=inp, expect="original", timeout_s=5)
    )
    assert reverted.ok, reverted.detail

    err = await failure(env, a.confirm_change, inp)

    assert err.type == "VerificationFailed" and err.non_retryable


async def test_verify_change_never_seen_returns_not_ok(lab: Lab, env: ActivityEnvironment) -> None:
    inp = lab.session(Platform.JUNIPER_JUNOS)
    res = await env.run(
        lab.activities.verify_change, VerifyInput(session=inp, expect="changed", timeout_s=0.3)
    )
    assert not res.ok
    assert "not seen within 0.3s" in res.detail


# --- failures, as the retry policy sees them ----------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_apply_unknown_host_key_rejected_not_retryable(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    others = lab.tmp / "known_hosts_without_device"
    me = f":{lab.device(platform).port} "
    others.write_text(
        "".join(x for x in lab.server.known_hosts_path.read_text().splitlines(True) if me not in x)
    )
    strict = lab.with_settings(known_hosts=others)
    err = await failure(env, strict.apply_change, lab.session(platform))
    assert err.type == "HostKeyRejected" and err.non_retryable
    assert routes(lab, platform) == [PRIMARY]


@pytest.mark.parametrize("platform", ALL)
async def test_apply_changed_host_key_rejected_not_retryable(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], Fault.HOST_KEY_CHANGE)
    err = await failure(env, lab.activities.apply_change, lab.session(platform))
    assert err.type == "HostKeyRejected" and err.non_retryable


@pytest.mark.parametrize("platform", ALL)
async def test_apply_auth_refused_not_retryable(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], Fault.AUTH_FAILURE)
    err = await failure(env, lab.activities.apply_change, lab.session(platform))
    assert err.type == "AuthenticationFailed" and err.non_retryable


@pytest.mark.parametrize("platform", ALL)
async def test_apply_unreachable_device_retryable(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], Fault.UNREACHABLE)
    err = await failure(env, lab.activities.apply_change, lab.session(platform))
    assert err.type == "DeviceUnreachable" and not err.non_retryable


@pytest.mark.parametrize("platform", ALL)
async def test_apply_cli_error_rejected_not_retryable_and_nothing_committed(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], Fault.CLI_ERROR)
    err = await failure(env, lab.activities.apply_change, lab.session(platform))
    assert err.type == "CommandRejected" and err.non_retryable
    assert routes(lab, platform) == [PRIMARY]
    rows = lab.store.transcripts("inc-1")
    assert rows and rows[-1].step == "apply" and "apply failed: CommandRejected" in rows[-1].text


@pytest.mark.parametrize("platform", ALL)
async def test_apply_hung_cli_session_lost_retryable_within_command_timeout(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], Fault.HANG)
    impatient = lab.with_settings(ssh_command_timeout_s=HANG_TIMEOUT_S)
    started = time.monotonic()
    err = await failure(env, impatient.apply_change, lab.session(platform))
    assert err.type == "SessionLost" and not err.non_retryable
    assert time.monotonic() - started < HANG_TIMEOUT_S + 1


@pytest.mark.parametrize("platform", ALL)
async def test_apply_all_lines_busy_session_limit_retryable(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    lab.net.set_fault(DEVICE_OF[platform], Fault.SESSION_LIMIT, max_sessions=0)
    err = await failure(env, lab.activities.apply_change, lab.session(platform))
    assert err.type == "SessionLimit" and not err.non_retryable


async def test_apply_junos_configuration_locked_by_another_session_busy_retryable(
    lab: Lab, env: ActivityEnvironment
) -> None:
    device = lab.device(Platform.JUNIPER_JUNOS)
    other = SessionLimits(max_sessions=1, new_connections_per_s=100)
    async with open_cli(
        device,
        credential=lab.settings.device_credentials["lab"],
        known_hosts=lab.server.known_hosts_path,
        dialect=dialect_for(Platform.JUNIPER_JUNOS),
        limits=other,
        connect_timeout_s=3,
        command_timeout_s=3,
    ) as someone:
        held = await someone.send("configure exclusive")
        assert not held.failed

        err = await failure(env, lab.activities.apply_change, lab.session(Platform.JUNIPER_JUNOS))

    assert err.type == "DeviceBusy" and not err.non_retryable
    assert routes(lab, Platform.JUNIPER_JUNOS) == [PRIMARY]


async def test_apply_with_pinned_host_key_needs_no_known_hosts(
    lab: Lab, env: ActivityEnvironment
) -> None:
    inp = lab.session(Platform.FRR)
    port = f":{inp.device.port} "
    line = next(x for x in lab.server.known_hosts_path.read_text().splitlines() if port in x)
    pinned = inp.device.model_copy(update={"host_key": line.split(" ", 1)[1]})
    nowhere = lab.with_settings(known_hosts=lab.tmp / "absent")

    applied = await env.run(nowhere.apply_change, inp.model_copy(update={"device": pinned}))
    assert applied.commands

    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = inp.device.model_copy(update={"host_key": stranger})
    err = await failure(env, nowhere.apply_change, inp.model_copy(update={"device": wrong}))
    assert err.type == "HostKeyRejected" and err.non_retryable


async def test_apply_without_known_hosts_file_rejected_not_retryable(
    lab: Lab, env: ActivityEnvironment
) -> None:
    nowhere = lab.with_settings(known_hosts=lab.tmp / "absent")
    err = await failure(env, nowhere.apply_change, lab.session(Platform.CISCO_IOSXE))
    assert err.type == "HostKeyRejected" and err.non_retryable


async def test_apply_injected_value_refused_before_connecting(
    lab: Lab, env: ActivityEnvironment
) -> None:
    inp = lab.session(Platform.CISCO_IOSXE)
    good = inp.changes[0].path
    bad_path = CircuitPath.model_construct(**{**dict(good), "prefix": "10.0.0.0/8; reload"})
    bad = inp.model_copy(
        update={"changes": [RouteChange.model_construct(circuit_id="x", path=bad_path)]}
    )
    lab.net.set_fault("r1", Fault.UNREACHABLE)  # proves no connection was even tried

    err = await failure(env, lab.activities.apply_change, bad)

    assert err.type == ValidationFailed.__name__ and err.non_retryable


async def test_apply_unknown_credential_not_retryable(lab: Lab, env: ActivityEnvironment) -> None:
    inp = lab.session(Platform.FRR)
    inp = inp.model_copy(update={"device": inp.device.model_copy(update={"credential": "nope"})})
    err = await failure(env, lab.activities.apply_change, inp)
    assert err.type == "AuthenticationFailed" and err.non_retryable


# --- transcripts, locks, limits -----------------------------------------------------------


@pytest.mark.parametrize("platform", ALL)
async def test_precheck_transcript_stored_without_password(
    lab: Lab, env: ActivityEnvironment, platform: Platform
) -> None:
    pre = await env.run(lab.activities.precheck_device, lab.session(platform))

    row = lab.store.transcript(pre.transcript.id)
    assert row is not None and row.sha256 == pre.transcript.sha256 and row.step == "precheck"
    assert dialect_for(platform).route_command in row.text
    assert PASSWORD not in row.text
    assert pre.paths[0].primary_present and not pre.paths[0].backup_present
    assert not pre.pending_commit


async def test_precheck_sees_pending_change(lab: Lab, env: ActivityEnvironment) -> None:
    inp = lab.session(Platform.HUAWEI_VRP)
    await env.run(lab.activities.apply_change, inp)
    pre = await env.run(lab.activities.precheck_device, inp)
    assert pre.pending_commit
    assert pre.paths[0].backup_present and not pre.paths[0].primary_present


async def test_lock_device_held_by_other_busy_retryable(lab: Lab, env: ActivityEnvironment) -> None:
    a = lab.activities
    await env.run(a.lock_device, LockInput(device="r1", holder="change-a", lease_s=60))
    await env.run(a.lock_device, LockInput(device="r1", holder="change-a", lease_s=60))  # renew

    err = await failure(env, a.lock_device, LockInput(device="r1", holder="change-b", lease_s=60))
    assert err.type == "DeviceBusy" and not err.non_retryable

    await env.run(a.unlock_device, LockInput(device="r1", holder="change-a", lease_s=60))
    await env.run(a.lock_device, LockInput(device="r1", holder="change-b", lease_s=60))


async def test_session_limits_one_session_per_device_at_a_time() -> None:
    limits = SessionLimits(max_sessions=10, max_per_device=1, new_connections_per_s=1000)
    inside: dict[str, int] = {"r1": 0, "r2": 0}
    peak: dict[str, int] = {"r1": 0, "r2": 0}

    async def use(device: str) -> None:
        async with limits.slot(device):
            inside[device] += 1
            peak[device] = max(peak[device], inside[device])
            await asyncio.sleep(0.01)
            inside[device] -= 1

    await asyncio.gather(*(use(d) for d in ["r1", "r1", "r1", "r2", "r2"]))
    assert peak == {"r1": 1, "r2": 1}


async def test_session_limits_pace_new_connections() -> None:
    limits = SessionLimits(max_sessions=10, max_per_device=5, new_connections_per_s=20)
    started = time.monotonic()

    async def use(device: str) -> None:
        async with limits.slot(device):
            pass

    await asyncio.gather(*(use(f"r{i}") for i in range(5)))
    assert time.monotonic() - started >= 4 / 20 * 0.9
