"""Network-gear activities: lock, precheck, apply with auto-revert, verify, confirm, roll back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from continuity.dialects import Dialect, dialect_for, revert_window_s
from continuity.errors import (
    AuthenticationFailed,
    CommandRejected,
    ContinuityError,
    DeviceBusy,
    VerificationFailed,
)
from continuity.messages import (
    ApplyResult,
    DeviceSessionInput,
    LockInput,
    PathState,
    PrecheckResult,
    StepResult,
    VerifyInput,
    VerifyResult,
)
from continuity.models import RerouteMechanism, RouteChange, TranscriptRef
from continuity.settings import DeviceCredential, Settings
from continuity.ssh import CliSession, SessionLimits, Transcript, open_cli
from continuity.store import Store

T = TypeVar("T")
Direction = Literal["reroute", "restore"]

# Polling a route table: often enough to notice within a blink, rarely enough for real gear.
_POLL_MIN_S = 0.1
_POLL_MAX_S = 2.0


@contextlib.contextmanager
def _as_application_error() -> Iterator[None]:
    """Our errors leave as ApplicationError(type, non_retryable): what retry policies read."""
    try:
        yield
    except ContinuityError as e:
        raise ApplicationError(e.message, type=e.type, non_retryable=not e.retryable) from e


@dataclass(frozen=True)
class _Snapshot:
    active: list[PathState]  # what forwards now
    configured: list[PathState]  # what the configuration holds (a cut link's route stays)
    pending: bool  # an unconfirmed change with a running device timer


def _old_new(s: PathState, direction: Direction) -> tuple[bool, bool]:
    """(old path there, new path there) for a move in `direction`."""
    if direction == "reroute":
        return s.primary_present, s.backup_present
    return s.backup_present, s.primary_present


def _in_place(states: Sequence[PathState], direction: Direction) -> bool:
    return all(new and not old for old, new in (_old_new(s, direction) for s in states))


def _original(states: Sequence[PathState], direction: Direction) -> bool:
    return all(old and not new for old, new in (_old_new(s, direction) for s in states))


def _describe(states: Sequence[PathState], changes: Sequence[RouteChange]) -> str:
    by_id = {c.circuit_id: c for c in changes}
    parts = []
    for s in states:
        p = by_id[s.circuit_id].path
        primary = "up" if s.primary_present else "absent"
        backup = "up" if s.backup_present else "absent"
        parts.append(
            f"{s.circuit_id}: primary {p.primary.address} {primary},"
            f" backup {p.backup.address} {backup}"
        )
    return "; ".join(parts)


class _Device:
    """A CLI session seen through its dialect: run config lines, read route state."""

    def __init__(self, cli: CliSession, dialect: Dialect) -> None:
        self.cli = cli
        self.dialect = dialect

    async def run(self, lines: Sequence[str]) -> list[str]:
        sent: list[str] = []
        for line in lines:
            result = await self.cli.send(line)
            sent.append(line)
            if result.failed:
                answer = " / ".join(x.strip() for x in result.output.splitlines() if x.strip())
                if self.dialect.is_busy(result.output):
                    raise DeviceBusy(f"{self.cli.device.name}: {answer[:300]}")
                await self._leave_config()
                raise CommandRejected(f"{self.cli.device.name} rejected {line!r}: {answer[:300]}")
        return sent

    async def _leave_config(self) -> None:
        # Back to operational mode so a half-edited candidate is discarded, not left open.
        for line in self.dialect.leave_config:
            with contextlib.suppress(ContinuityError):
                await self.cli.send(line)

    async def show(self, cmd: str) -> str:
        result = await self.cli.send(cmd)
        if result.failed:
            raise CommandRejected(
                f"{self.cli.device.name} rejected {cmd!r}: {result.output.strip()[:300]}"
            )
        return result.output

    async def still_pending(self) -> bool:
        cmd = self.dialect.pending_command
        return cmd is not None and self.dialect.parse_pending(await self.show(cmd))

    async def read(self, changes: Sequence[RouteChange]) -> _Snapshot:
        outputs = {cmd: await self.show(cmd) for cmd in self.dialect.state_commands()}
        cmd = self.dialect.pending_command
        return _Snapshot(
            active=self.dialect.parse_state(outputs, changes),
            configured=self.dialect.parse_config_state(outputs, changes),
            pending=cmd is not None and self.dialect.parse_pending(outputs[cmd]),
        )

    async def poll(
        self,
        changes: Sequence[RouteChange],
        *,
        until: Callable[[_Snapshot], bool],
        timeout_s: float,
        while_pending: bool = False,
    ) -> tuple[bool, _Snapshot]:
        """Re-read the device until `until` holds or `timeout_s` passes; never by a blind sleep.

        `while_pending`: only the (cheap) pending-commit command is polled while a change is
        pending, so minutes of waiting for a device timer do not mean minutes of full configs.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interval = min(_POLL_MAX_S, max(_POLL_MIN_S, timeout_s / 20))
        while True:
            out_of_time = loop.time() >= deadline
            if out_of_time or not (while_pending and await self.still_pending()):
                snap = await self.read(changes)
                if until(snap):
                    return True, snap
                if out_of_time:
                    return False, snap
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


class NetworkActivities:
    """Every side effect on network gear; built in worker.py with the store and settings."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._limits = SessionLimits.from_settings(settings)

    # --- locks ---------------------------------------------------------------------------

    @activity.defn(name="lock_device")
    async def lock_device(self, inp: LockInput) -> None:
        with _as_application_error():
            other = await asyncio.to_thread(
                self._store.try_lock_device,
                device=inp.device,
                holder=inp.holder,
                lease_s=inp.lease_s,
                now=time.time(),
            )
            if other is not None:
                raise DeviceBusy(f"device {inp.device} is being changed by {other}")

    @activity.defn(name="unlock_device")
    async def unlock_device(self, inp: LockInput) -> None:
        with _as_application_error():
            await asyncio.to_thread(self._store.unlock_device, device=inp.device, holder=inp.holder)

    # --- sessions ------------------------------------------------------------------------

    @activity.defn(name="precheck_device")
    async def precheck_device(self, inp: DeviceSessionInput) -> PrecheckResult:
        with _as_application_error():

            async def work(dev: _Device) -> _Snapshot:
                return await dev.read(inp.changes)

            snap, ref = await self._session(inp, "precheck", work)
            return PrecheckResult(transcript=ref, paths=snap.active, pending_commit=snap.pending)

    @activity.defn(name="apply_change")
    async def apply_change(self, inp: DeviceSessionInput) -> ApplyResult:
        with _as_application_error():
            return await self._apply(inp)

    @activity.defn(name="verify_change")
    async def verify_change(self, inp: VerifyInput) -> VerifyResult:
        with _as_application_error():
            return await self._verify(inp, step="verify")

    @activity.defn(name="confirm_change")
    async def confirm_change(self, inp: DeviceSessionInput) -> StepResult:
        with _as_application_error():
            return await self._confirm(inp)

    @activity.defn(name="rollback_change")
    async def rollback_change(self, inp: DeviceSessionInput) -> StepResult:
        with _as_application_error():
            return await self._rollback(inp)

    @activity.defn(name="await_device_revert")
    async def await_device_revert(self, inp: VerifyInput) -> VerifyResult:
        with _as_application_error():
            return await self._verify(inp, step="await_revert")

    # --- the steps -----------------------------------------------------------------------

    async def _apply(self, inp: DeviceSessionInput) -> ApplyResult:
        dialect = dialect_for(inp.device.platform)
        t = inp.timings
        window_s = revert_window_s(t)
        revert_s = window_s * t.device_time_scale  # device seconds
        # Rendered before connecting: a value failing validation means nothing is ever sent.
        dialect.render_apply(inp.changes, direction=inp.direction, revert_s=revert_s)
        armed_s = dialect.armed_revert_s(revert_s)
        deadline_s = window_s if armed_s is None else armed_s / t.device_time_scale
        auto_revert: Literal["device", "orchestrator"] = (
            "device" if dialect.native_auto_revert else "orchestrator"
        )

        async def work(dev: _Device) -> tuple[list[str], bool]:
            snap = await dev.read(inp.changes)
            if _in_place(snap.configured, inp.direction):
                activity.logger.info("%s: change already in place, nothing sent", inp.change_id)
                return [], True
            plan = dialect.render_apply(
                inp.changes,
                direction=inp.direction,
                revert_s=revert_s,
                present=snap.configured,
                armed=snap.pending,
            )
            sent: list[str] = []
            for phase in plan.phases():
                if plan.make_before_break and any(b in phase for b in plan.break_):
                    await self._await_new_path(dev, inp, t.verify_timeout_s)
                sent += await dev.run(phase)
            return sent, False

        (sent, already), ref = await self._session(inp, "apply", work)
        return ApplyResult(
            transcript=ref,
            commands=sent,
            already_applied=already,
            auto_revert=auto_revert,
            revert_deadline_s=deadline_s,
        )

    async def _await_new_path(
        self, dev: _Device, inp: DeviceSessionInput, timeout_s: float
    ) -> None:
        """Make before break: the new next hop must forward before the old one is removed."""
        routed = [
            c
            for c in inp.changes
            if RerouteMechanism(c.path.mechanism) is RerouteMechanism.STATIC_ROUTE
        ]
        if not routed:
            return  # a policy route's old path is plain routing: always there

        def new_active(snap: _Snapshot) -> bool:
            return all(_old_new(s, inp.direction)[1] for s in snap.active)

        ok, snap = await dev.poll(routed, until=new_active, timeout_s=timeout_s)
        if not ok:
            raise VerificationFailed(
                f"{inp.device.name}: the new path never became active within {timeout_s:g}s "
                f"({_describe(snap.active, routed)}); the old path was left in place"
            )

    async def _verify(self, inp: VerifyInput, *, step: str) -> VerifyResult:
        s = inp.session
        direction = s.direction

        def judge(snap: _Snapshot) -> bool:
            if inp.expect == "changed":
                # Forwarding on the new path, and the old one gone from forwarding and config.
                return _in_place(snap.active, direction) and all(
                    not _old_new(c, direction)[0] for c in snap.configured
                )
            return _original(snap.configured, direction) and not snap.pending

        async def work(dev: _Device) -> tuple[bool, _Snapshot]:
            return await dev.poll(
                s.changes,
                until=judge,
                timeout_s=inp.timeout_s,
                while_pending=inp.expect == "original",
            )

        (ok, snap), ref = await self._session(s, step, work)
        state = _describe(snap.active, s.changes)
        if ok:
            detail = (
                f"{direction} in place: {state}"
                if inp.expect == "changed"
                else f"original configuration back: {state}"
            )
        else:
            what = "the change" if inp.expect == "changed" else "the original configuration"
            pending = "; a change is still pending" if snap.pending else ""
            detail = f"{what} not seen within {inp.timeout_s:g}s: {state}{pending}"
        return VerifyResult(ok=ok, detail=detail, transcript=ref, paths=snap.active)

    async def _confirm(self, inp: DeviceSessionInput) -> StepResult:
        dialect = dialect_for(inp.device.platform)

        async def work(dev: _Device) -> tuple[list[str], str]:
            snap = await dev.read(inp.changes)
            if not _in_place(snap.configured, inp.direction):
                raise VerificationFailed(
                    f"{inp.device.name}: nothing to confirm, the change is not on the device "
                    f"(reverted?): {_describe(snap.configured, inp.changes)}"
                )
            if not snap.pending:
                # Confirmed before (a retry) or a platform without timers: persisting is safe twice.
                sent = await dev.run(dialect.persist_commands)
                return sent, "already confirmed; configuration saved"
            sent = await dev.run(dialect.render_confirm())
            after = await dev.read(inp.changes)
            if after.pending:
                raise VerificationFailed(f"{inp.device.name}: still pending after {sent!r}")
            if not _in_place(after.configured, inp.direction):
                # The device's timer fired between our check and our confirm.
                raise VerificationFailed(
                    f"{inp.device.name}: the change reverted before the confirmation reached it"
                )
            return sent, "confirmed and saved"

        (sent, detail), ref = await self._session(inp, "confirm", work)
        return StepResult(transcript=ref, commands=sent, detail=detail)

    async def _rollback(self, inp: DeviceSessionInput) -> StepResult:
        dialect = dialect_for(inp.device.platform)
        dialect.render_inverse(inp.changes, inp.direction)  # validate before connecting

        async def work(dev: _Device) -> tuple[list[str], str]:
            snap = await dev.read(inp.changes)
            if _original(snap.configured, inp.direction) and not snap.pending:
                return [], "already original; nothing sent"
            if snap.pending and dialect.native_auto_revert:
                abort = dialect.render_rollback(inp.changes, inp.direction)
                try:
                    sent = await dev.run(abort)
                except CommandRejected:
                    # e.g. `abort trial` just after the trial ran out: fine if it is undone.
                    late = await dev.read(inp.changes)
                    if not (_original(late.configured, inp.direction) and not late.pending):
                        raise
                    return list(abort), "the device had reverted by itself"
                how = "pending change aborted on the device"
            else:
                sent = await dev.run(
                    dialect.render_inverse(inp.changes, inp.direction, present=snap.configured)
                )
                how = "inverse lines applied"
            after = await dev.read(inp.changes)
            if not _original(after.configured, inp.direction):
                raise VerificationFailed(
                    f"{inp.device.name}: after rollback the configuration is not original: "
                    f"{_describe(after.configured, inp.changes)}"
                )
            return sent, how

        (sent, detail), ref = await self._session(inp, "rollback", work)
        return StepResult(transcript=ref, commands=sent, detail=detail)

    # --- plumbing ------------------------------------------------------------------------

    def _credential(self, name: str) -> DeviceCredential:
        cred = self._settings.device_credentials.get(name)
        if cred is None:
            raise AuthenticationFailed(f"no device credential configured under {name!r}")
        return cred

    async def _session(
        self, inp: DeviceSessionInput, step: str, work: Callable[[_Device], Awaitable[T]]
    ) -> tuple[T, TranscriptRef]:
        """Run `work` in one CLI session; the transcript is stored whatever happens."""
        dialect = dialect_for(inp.device.platform)
        cred = self._credential(inp.device.credential)
        secret = cred.password.get_secret_value() if cred.password else ""
        transcript = Transcript(secrets=[secret])
        tid = f"tr-{uuid.uuid4().hex[:20]}"  # one row per attempt, written as the session goes

        async def flush() -> TranscriptRef:
            return await self._save(inp, step, transcript, tid=tid)

        async with self._heartbeating(inp, step, flush=flush):
            try:
                async with open_cli(
                    inp.device,
                    credential=cred,
                    known_hosts=self._settings.known_hosts_path,
                    dialect=dialect,
                    limits=self._limits,
                    connect_timeout_s=self._settings.ssh_connect_timeout_s,
                    command_timeout_s=self._settings.ssh_command_timeout_s,
                    transcript=transcript,
                ) as cli:
                    result = await work(_Device(cli, dialect))
            except BaseException as e:
                kind = e.type if isinstance(e, ContinuityError) else type(e).__name__
                transcript.note(f"{step} failed: {kind}: {e}")
                with contextlib.suppress(ContinuityError):
                    await flush()
                raise
        return result, await flush()

    async def _save(
        self, inp: DeviceSessionInput, step: str, transcript: Transcript, *, tid: str
    ) -> TranscriptRef:
        tid, digest = await asyncio.to_thread(
            self._store.save_transcript,
            incident_id=inp.incident_id,
            change_id=inp.change_id,
            device=inp.device.name,
            step=step,
            text=transcript.text,
            tid=tid,
        )
        return TranscriptRef(id=tid, sha256=digest, step=step)

    @contextlib.asynccontextmanager
    async def _heartbeating(
        self, inp: DeviceSessionInput, step: str, *, flush: Callable[[], Awaitable[object]]
    ) -> AsyncIterator[None]:
        """Heartbeat while the session runs, so a long wait on a device is not taken for death,
        and write the transcript so far, so a worker that dies mid-session leaves evidence."""
        configured = activity.info().heartbeat_timeout
        timeout_s = configured.total_seconds() if configured else inp.timings.heartbeat_timeout_s
        interval = max(0.2, timeout_s / 3)

        async def beat() -> None:
            while True:
                activity.heartbeat(step)
                await asyncio.sleep(interval)
                with contextlib.suppress(ContinuityError):
                    await flush()

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["NetworkActivities"]
