"""Network-gear activities: apply, confirm, undo and read back a device change, one session each."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import activity

from activities._errors import application_error
from activities._heartbeat import heartbeating
from continuity.attestation import Attestation
from continuity.circuits import dedupe, path_key
from continuity.dialects import ApplyPlan, Dialect, dialect_for
from continuity.errors import (
    AuthenticationFailed,
    CommandRejected,
    ContinuityError,
    DecisionRefused,
    DeviceBusy,
    DeviceLocked,
    ForeignPendingCommit,
    ValidationFailed,
    VerificationFailed,
)
from continuity.messages import (
    ChangeStepInput,
    DecisionRefusedSignal,
    DecisionSignal,
    DeviceStepInput,
    DeviceStepResult,
    Evidence,
    PathState,
    ReadBackInput,
    ReadBackResult,
    StepTimings,
)
from continuity.models import (
    ChangeState,
    Decision,
    Device,
    Direction,
    Inventory,
    PartState,
    RerouteMechanism,
    RouteChange,
    TranscriptRef,
)
from continuity.plan import lines_sha256
from continuity.settings import DeviceCredential, Settings
from continuity.ssh import CliSession, SessionLimits, SessionPool, Transcript
from continuity.store import ChangeRow, CircuitPartRow, JournalEntry, Store

T = TypeVar("T")
log = logging.getLogger("continuity.steps")

# Polling a route table: often enough to notice within a blink, rarely enough for real gear.
_POLL_MIN_S = 0.05
_POLL_MAX_S = 2.0
# Details travel in the history: long enough to say what happened, short enough to stay small.
_DETAIL_MAX = 300


@dataclass(frozen=True)
class _Snapshot:
    active: list[PathState]  # what forwards now
    configured: list[PathState]  # what the configuration holds (a cut link's route stays)
    pending: bool  # an unconfirmed change with a running device timer


def _aware(at: datetime) -> datetime:
    # SQLite hands timestamps back naive; the store writes them in UTC.
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _revert_s(t: StepTimings) -> float:
    """Device seconds a change may stay unconfirmed before the device's own timer undoes it."""
    return t.revert_window_s * t.device_time_scale


def _last_attempt(info: activity.Info) -> bool:
    """No retry of this activity will follow (unknown policy: assume one may)."""
    policy = info.retry_policy
    return policy is not None and 0 < policy.maximum_attempts <= info.attempt


def _old_new(s: PathState, direction: Direction) -> tuple[bool, bool]:
    """(old path there, new path there) for a move in `direction`."""
    if direction is Direction.REROUTE:
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


def _part(s: PathState, *, pending: bool = False) -> PartState:
    """What a path's configuration says about its circuit's part on this device."""
    if s.backup_present and not s.primary_present:
        # A running device timer may still take it back: not confirmed.
        return PartState.BACKUP_UNCONFIRMED if pending else PartState.BACKUP
    if s.primary_present and not s.backup_present:
        return PartState.PRIMARY
    return PartState.UNKNOWN  # both or neither: half-made, or someone else's edit


def _evidence(rows: Sequence[JournalEntry]) -> tuple[list[TranscriptRef], list[str]]:
    """Every transcript of a change and every line they sent, in order."""
    refs = [TranscriptRef(id=r.id, sha256=r.sha256, step=r.step, attempt=r.attempt) for r in rows]
    return refs, [line for r in rows for line in (r.sent or [])]


def _deadline(t: StepTimings, rows: Sequence[JournalEntry]) -> datetime:
    """When the confirmation window closes: never later than the device timer allows."""
    deadline = datetime.now(UTC) + timedelta(seconds=t.confirm_window_s)
    armed = [_aware(r.created_at) for r in rows if r.step == "apply" and r.sent]
    if armed:
        # The first row that sent lines was written before the arm went out.
        latest = min(armed) + timedelta(seconds=t.revert_window_s - t.revert_margin_s)
        deadline = min(deadline, latest)
    return deadline


@dataclass
class _Journal:
    """One attempt's transcript row, written before configuration lines go out."""

    store: Store
    transcript: Transcript
    tid: str
    incident_id: str
    change_id: str
    device: str
    step: str
    attempt: int
    sent: list[str] = field(default_factory=list)

    async def write(self, status: str, *, also: Callable[[], None] | None = None) -> None:
        """The row as it stands; `also` (store bookkeeping) commits in the same transaction."""

        def write() -> None:
            with self.store.unit():
                self.write_now(status)
                if also is not None:
                    also()

        await asyncio.to_thread(write)

    def write_now(self, status: str) -> None:
        """The same on the caller's thread, inside the caller's store unit."""
        self.store.journal(
            tid=self.tid,
            incident_id=self.incident_id,
            change_id=self.change_id,
            device=self.device,
            step=self.step,
            attempt=self.attempt,
            text=self.transcript.text,
            sent=self.sent,
            status=status,
        )


class _Device:
    """A CLI session seen through its dialect: run config lines (journalled first), read state."""

    def __init__(self, cli: CliSession, dialect: Dialect, journal: _Journal) -> None:
        self.cli = cli
        self.dialect = dialect
        self.journal = journal
        # Store bookkeeping due with the first batch's journal write, in its transaction.
        self.before_first_send: Callable[[], None] | None = None

    async def run(self, lines: Sequence[str]) -> list[str]:
        if not lines:
            return []
        # Write-ahead: the row names these lines before the device can have received them.
        self.journal.sent += list(lines)
        also, self.before_first_send = self.before_first_send, None
        await self.journal.write("sending", also=also)
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

    async def read(self, changes: Sequence[RouteChange], *, pending: bool = True) -> _Snapshot:
        """Routes, configuration and (unless told not to) the pending-commit state."""
        cmds = [self.dialect.route_command, self.dialect.config_command]
        cmd = self.dialect.pending_command if pending else None
        if cmd is not None:
            cmds.append(cmd)
        outputs = {c: await self.show(c) for c in cmds}
        return _Snapshot(
            active=self.dialect.parse_state(outputs, changes),
            configured=self.dialect.parse_config_state(outputs, changes),
            pending=cmd is not None and self.dialect.parse_pending(outputs[cmd]),
        )

    async def read_forwarding(self, changes: Sequence[RouteChange]) -> _Snapshot:
        """What forwards now, from the route table alone: static routes only."""
        cmd = self.dialect.route_command
        outputs = {cmd: await self.show(cmd)}
        return _Snapshot(
            active=self.dialect.parse_state(outputs, changes), configured=[], pending=False
        )

    async def poll(
        self,
        changes: Sequence[RouteChange],
        *,
        until: Callable[[_Snapshot], bool],
        timeout_s: float,
        while_pending: bool = False,
        forwarding_only: bool = False,
        pending: bool = True,
    ) -> tuple[bool, _Snapshot]:
        """Re-read the device until `until` holds or `timeout_s` passes; never by a blind sleep.

        `while_pending`: only the (cheap) pending-commit command is polled while a change is
        pending, so minutes of waiting for a device timer do not mean minutes of full configs.
        `forwarding_only`: read the route table alone (static routes; `configured` is empty).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interval = min(_POLL_MAX_S, max(_POLL_MIN_S, timeout_s / 50))
        while True:
            out_of_time = loop.time() >= deadline
            if out_of_time or not (while_pending and await self.still_pending()):
                snap = (
                    await self.read_forwarding(changes)
                    if forwarding_only
                    else await self.read(changes, pending=pending)
                )
                if until(snap):
                    return True, snap
                if out_of_time:
                    return False, snap
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
            interval = min(_POLL_MAX_S, interval * 1.5)


@dataclass
class _Step:
    """What one device step works on, whether named by the snapshot (apply) or by id (confirm)."""

    incident_id: str
    change_id: str
    device: Device
    direction: Direction
    changes: list[RouteChange]
    timings: StepTimings
    known: Evidence = field(default_factory=Evidence)  # what the workflow already holds
    journal: _Journal | None = None  # the last session's, written "complete" when it settles
    # Seconds in SSH sessions, and of those opening them (a pooled one opens in no time).
    session_s: float = 0.0
    opening_s: float = 0.0

    @property
    def keys(self) -> dict[str, str]:
        return {c.circuit_id: path_key(c.path, c.circuit_id) for c in self.changes}


class NetworkActivities:
    """Every side effect on network gear; built in worker.py with the store and settings.

    Each step is one activity and one SSH session (pooled per worker), and ends by recording in
    the store what it did: the change's state, the circuit parts, the device lock.
    """

    def __init__(self, store: Store, settings: Settings, *, pool: SessionPool | None = None):
        self._store = store
        self._settings = settings
        self._pool = pool or SessionPool(
            SessionLimits.from_settings(settings),
            idle_s=settings.ssh_idle_s,
            max_idle=settings.ssh_pool_size,
        )
        # Every device this worker touched, for tests of site isolation and for operators.
        self.touched: set[str] = set()

    async def close(self) -> None:
        await self._pool.close()

    # --- the activities ------------------------------------------------------------------

    @activity.defn(name="apply_device_change")
    async def apply_device_change(self, inp: DeviceStepInput) -> DeviceStepResult:
        device, changes = await self._resolve(inp.snapshot, inp.device, inp.circuits)
        step = _Step(
            inp.incident_id,
            inp.change_id,
            device,
            inp.direction,
            changes,
            inp.timings,
            known=inp.known,
        )
        async with self._reporting(step, "apply"):
            # Rendered before the lock and the session: a value failing validation is never
            # sent, and nobody waits on the device for it.
            dialect_for(step.device.platform).render_apply(
                dedupe(step.changes),
                direction=step.direction,
                revert_s=_revert_s(step.timings),
            )
            armed_by, prior = await self._begin(step, inp)
            if inp.direction is Direction.RESTORE:
                return await self._restore(step, inp, armed_by)
            return await self._reroute(step, inp, armed_by, prior)

    @activity.defn(name="confirm_device_change")
    async def confirm_device_change(self, inp: ChangeStepInput) -> DeviceStepResult:
        loaded = await self._load(inp)
        if loaded is None:
            raise application_error(
                VerificationFailed(f"no record of change {inp.change_id} in the store")
            )
        step, row, armed_by, _sent = loaded
        async with self._reporting(step, "confirm"):
            early = await self._check_claim(step, inp, row)
            if early is not None:
                return early
            return await self._confirm(step, inp, armed_by)

    @activity.defn(name="undo_device_change")
    async def undo_device_change(self, inp: ChangeStepInput) -> DeviceStepResult:
        loaded = await self._load(inp)
        if loaded is None:
            # The apply records its change before any session opens: an apply stopped before
            # that (an ending cancels it) never reached the device.
            return DeviceStepResult(
                state=ChangeState.SKIPPED,
                detail=f"no record of {inp.change_id}: never reached the device; nothing to undo",
            )
        step, row, armed_by, sent_before = loaded
        async with self._reporting(step, "undo"):
            early = await self._check_claim(step, inp, row)
            if early is not None:
                return early
            return await self._undo(step, inp, armed_by, sent_before)

    @activity.defn(name="read_back_device")
    async def read_back_device(self, inp: ReadBackInput) -> ReadBackResult:
        device, changes = await self._resolve(inp.snapshot, inp.device, inp.circuits)
        step = _Step(
            inp.incident_id,
            f"readback-{inp.incident_id}-{device.name}",
            device,
            Direction.REROUTE,
            changes,
            StepTimings(
                confirm_window_s=0,
                verify_timeout_s=0,
                revert_margin_s=0,
                revert_wait_grace_s=0,
                lease_s=0,
            ),
        )
        async with self._reporting(step, "read_back"):

            async def work(dev: _Device) -> _Snapshot:
                return await dev.read(dedupe(changes))

            snap = await self._session(step, "read_back", work)
            journal = step.journal
            states = dict(self._key_parts(step, snap, pending=snap.pending))

            def write() -> tuple[dict[str, PartState], TranscriptRef | None]:
                with self._store.unit():
                    if journal is not None:
                        journal.write_now("complete")
                    parts = self._store.set_parts(
                        device=step.device.name,
                        states=states,
                        incident_id=step.incident_id,
                        change_id=step.change_id,
                        detail="read back at close",
                        circuits=step.keys,
                    )
                row = self._store.transcript(journal.tid) if journal else None
                ref = (
                    TranscriptRef(id=row.id, sha256=row.sha256, step=row.step, attempt=row.attempt)
                    if row
                    else None
                )
                return parts, ref

            parts, ref = await asyncio.to_thread(write)
            return ReadBackResult(parts=parts, pending=snap.pending, transcript=ref)

    # --- reroute and restore -------------------------------------------------------------

    async def _reroute(
        self,
        step: _Step,
        inp: DeviceStepInput,
        armed_by: str | None,
        prior: dict[str, CircuitPartRow],
    ) -> DeviceStepResult:
        dialect = dialect_for(step.device.platform)
        t = step.timings
        revert_s = _revert_s(t)
        unique = dedupe(step.changes)
        # Parts already confirmed on backup by another change (another incident's, usually)
        # are adopted as they are: nothing to send, nobody to ask again.
        adopted = bool(prior) and all(
            (r := prior.get(c)) is not None
            and r.state == PartState.BACKUP.value
            and r.change_id != step.change_id
            for c in step.keys
        )

        async def work(dev: _Device) -> tuple[str, _Snapshot, bool]:
            snap = await dev.read(unique)
            if snap.pending and armed_by != step.change_id:
                raise ForeignPendingCommit(
                    f"{step.device.name} has an unconfirmed change that is not ours "
                    f"(armed by {armed_by or 'someone outside continuity'}); nothing sent"
                )
            if _in_place(snap.configured, step.direction):
                ok, snap = await dev.poll(
                    unique, until=self._changed(step), timeout_s=t.verify_timeout_s
                )
                if not ok:
                    raise VerificationFailed(
                        f"{step.device.name}: configured on backup but not forwarding: "
                        f"{_describe(snap.active, unique)}"
                    )
                return "in place", snap, snap.pending
            plan = dialect.render_apply(
                unique,
                direction=step.direction,
                revert_s=revert_s,
                present=snap.configured,
                armed=snap.pending,
            )
            self._start_sending(dev, step, plan, PartState.APPLYING)
            try:
                await self._run_plan(dev, step, plan)
            except VerificationFailed as e:
                # The new path never forwarded and the old one is still there: take the new
                # one away again in this session, before anyone is asked to confirm it.
                return f"verification failed: {e.message}", await self._take_back(dev, step), False
            # The pending state is known here (we just armed it): the check reads routes only.
            ok, after = await dev.poll(
                unique, until=self._changed(step), timeout_s=t.verify_timeout_s, pending=False
            )
            if ok:
                return "applied", after, True
            why = f"verification failed: {_describe(after.active, unique)}"
            return why, await self._take_back(dev, step), False

        try:
            how, snap, pending = await self._session(step, "apply", work)
        except ContinuityError as e:
            await self._apply_failed(step, e)
            raise
        auto: Literal["device", "orchestrator"] = (
            "device" if dialect.native_auto_revert else "orchestrator"
        )
        if how.startswith("verification failed"):
            return await self._settle(
                step,
                ChangeState.FAILED,
                how,
                dict(self._key_parts(step, snap)),
                release=True,
                disarm=True,
                auto_revert=auto,
            )
        if how == "in place" and not pending and adopted:
            owners = sorted({r.incident_id for r in prior.values()})
            detail = (
                f"already on backup, confirmed in {', '.join(owners)}; nothing sent, "
                "nothing to confirm"
            )
            return await self._settle(
                step,
                ChangeState.CONFIRMED,
                detail,
                {k: PartState.BACKUP for k in step.keys.values()},
                release=True,
                already_applied=True,
                verified=True,
            )
        detail = f"{step.direction.value} in place: {_describe(snap.active, unique)}" + (
            "; found already applied" if how == "in place" else ""
        )
        return await self._settle(
            step,
            ChangeState.AWAITING_CONFIRMATION,
            detail,
            {k: PartState.BACKUP_UNCONFIRMED for k in step.keys.values()},
            awaiting=True,
            verified=True,
            already_applied=how == "in place",
            auto_revert=auto,
        )

    async def _restore(
        self, step: _Step, inp: DeviceStepInput, armed_by: str | None
    ) -> DeviceStepResult:
        """Back to primary, except what another active incident still holds; no human."""
        dialect = dialect_for(step.device.platform)
        t = step.timings
        revert_s = _revert_s(t) if dialect.native_auto_revert else None
        needed = await asyncio.to_thread(
            self._store.held_elsewhere,
            device=step.device.name,
            keys=sorted(set(step.keys.values())),
            incident_id=step.incident_id,
        )
        kept = {
            c.circuit_id: sorted({inc for _, inc in needed[step.keys[c.circuit_id]]})
            for c in step.changes
            if needed.get(step.keys[c.circuit_id])
        }
        go = [c for c in step.changes if c.circuit_id not in kept]
        kept_note = "; ".join(f"{c} still held by {', '.join(i)}" for c, i in kept.items())
        if not go:
            detail = f"nothing to restore: {kept_note}"
            return await self._settle(
                step, ChangeState.SKIPPED, detail, {}, release=True, kept=kept
            )
        moving = _Step(
            step.incident_id, step.change_id, step.device, step.direction, go, t, known=step.known
        )
        unique = dedupe(go)
        armer = (
            await asyncio.to_thread(self._store.change, armed_by)
            if armed_by and armed_by != step.change_id
            else None
        )
        # A change of this incident left pending (its undo failed) is ended first, whole.
        earlier = (
            self._step_of(armer, t)
            if armer is not None and armer.incident_id == step.incident_id
            else None
        )

        ended: list[str] = []

        async def work(dev: _Device) -> tuple[bool, str, _Snapshot]:
            ok, how, snap = await move(dev)
            if ended:
                how = f"ended {ended[0]}, left pending, first; {how}"
            return ok, how, snap

        async def move(dev: _Device) -> tuple[bool, str, _Snapshot]:
            snap = await dev.read(unique)
            if snap.pending and armed_by != step.change_id:
                if earlier is None:
                    raise ForeignPendingCommit(
                        f"{step.device.name} has an unconfirmed change that is not ours "
                        f"(armed by {armed_by or 'someone outside continuity'}); nothing sent"
                    )
                # Undone as its own undo would, never committed along with ours.
                await self._undo_on_device(dev, earlier, await dev.read(dedupe(earlier.changes)))
                ended.append(earlier.change_id)
                await asyncio.to_thread(
                    self._store.set_armed,
                    device=step.device.name,
                    holder=step.incident_id,
                    change_id=None,
                )
                snap = await dev.read(unique)
                if snap.pending:
                    raise VerificationFailed(
                        f"{step.device.name}: {earlier.change_id} still pending after undoing it"
                    )
            if _in_place(snap.configured, step.direction) and not snap.pending:
                return True, "already on primary; nothing sent", snap
            plan = dialect.render_apply(
                unique,
                direction=step.direction,
                revert_s=revert_s,
                present=snap.configured,
                armed=snap.pending,
            )
            self._start_sending(dev, moving, plan, PartState.RETURNING)
            try:
                await self._run_plan(dev, moving, plan)
            except VerificationFailed as e:
                # The primary never came up: take it away again, the backup stays in place.
                return False, e.message, await self._take_back(dev, moving)
            ok, after = await dev.poll(
                unique, until=self._changed(moving), timeout_s=t.verify_timeout_s
            )
            if not ok:
                why = f"primary not forwarding: {_describe(after.active, unique)}"
                return False, why, await self._take_back(dev, moving, after)
            if after.pending or dialect.persist_commands:
                await dev.run(
                    dialect.render_confirm() if after.pending else dialect.persist_commands
                )
            return True, "restored to primary and saved", await dev.read(unique)

        try:
            ok, how, snap = await self._session(moving, "apply", work)
        except ContinuityError as e:
            await self._apply_failed(moving, e)
            raise
        finally:  # the step's log line counts the session it ran under another name
            step.session_s, step.opening_s = moving.session_s, moving.opening_s
        detail = how + (f"; {kept_note}" if kept_note else "")
        if not ok:
            return await self._settle(
                moving,
                ChangeState.FAILED,
                detail,
                dict(self._key_parts(moving, snap)),
                release=True,
                disarm=True,
                kept=kept,
            )
        return await self._settle(
            moving,
            ChangeState.CONFIRMED,
            detail,
            {k: PartState.PRIMARY for k in moving.keys.values()},
            release=True,
            disarm=True,
            kept=kept,
            verified=True,
            already_applied=how.startswith("already"),
        )

    def _start_sending(self, dev: _Device, step: _Step, plan: ApplyPlan, moving: PartState) -> None:
        """With the first batch's journal write: the parts move, a timer we arm is ours."""

        def write() -> None:
            self._store.set_parts(
                device=step.device.name,
                states={k: moving for k in step.keys.values()},
                incident_id=step.incident_id,
                change_id=step.change_id,
                detail=moving.value,
                circuits=step.keys,
            )
            if plan.arm:
                # Ours from here on, even if this worker dies before the next line.
                self._store.set_armed(
                    device=step.device.name, holder=step.incident_id, change_id=step.change_id
                )

        dev.before_first_send = write

    async def _run_plan(self, dev: _Device, step: _Step, plan: ApplyPlan) -> None:
        for i, phase in enumerate(plan.phases()):
            # The phase that removes the old path: the second, or the only one when the new
            # path was already made (a retry after an interrupted make).
            if plan.make_before_break and plan.break_ and (i > 0 or not plan.make):
                await self._await_new_path(dev, step, dedupe(step.changes))
            await dev.run(phase)

    async def _take_back(
        self, dev: _Device, step: _Step, snap: _Snapshot | None = None
    ) -> _Snapshot:
        """Undo a move that did not verify, in the same session; what the device shows after."""
        unique = dedupe(step.changes)
        await self._undo_on_device(dev, step, snap or await dev.read(unique))
        return await dev.read(unique)

    async def _apply_failed(self, step: _Step, e: ContinuityError) -> None:
        """An apply that raised leaves the store telling what is known about the device."""
        final = not e.retryable or _last_attempt(activity.info())
        sent = any(r.sent for r in await self._journal(step, "apply"))

        def write() -> None:
            if sent:
                # Lines may have reached the device: its state is unknown until it is read
                # again (the incident's undo or retry does that), and the lock stays.
                self._store.set_parts(
                    device=step.device.name,
                    states={k: PartState.UNKNOWN for k in step.keys.values()},
                    incident_id=step.incident_id,
                    change_id=step.change_id,
                    detail=f"{e.type} after lines were sent",
                    circuits=step.keys,
                )
                if final:
                    self._store.set_change_state(
                        step.change_id,
                        ChangeState.NEEDS_ATTENTION.value,
                        detail=f"{e.type}: {e.message}",
                    )
                return
            if final:
                state = (
                    ChangeState.REFUSED
                    if isinstance(e, ForeignPendingCommit)
                    else ChangeState.FAILED
                )
                self._store.set_change_state(
                    step.change_id, state.value, detail=f"{e.type}: {e.message}; nothing sent"
                )
                # Nothing of ours is on the device: nobody needs to wait for this change.
                self._store.unlock_device(device=step.device.name, holder=step.incident_id)

        with contextlib.suppress(ContinuityError):  # the device error is what must surface
            await asyncio.to_thread(write)

    # --- confirm and undo ----------------------------------------------------------------

    async def _check_claim(
        self, step: _Step, inp: ChangeStepInput, row: ChangeRow
    ) -> DeviceStepResult | None:
        """The store decides which decision wins a change; None: go ahead with this step."""
        claim = inp.claim
        now = datetime.now(UTC)
        if claim.kind == "decision":
            assert claim.decision is not None
            if row.decision is None:
                # The decision did not come through the API (or its claim is not visible yet):
                # claim it now, under the same rules.
                try:
                    await asyncio.to_thread(
                        self._store.claim_decision,
                        incident_id=step.incident_id,
                        change_id=step.change_id,
                        decision=claim.decision,
                        operator=claim.by,
                        reason=claim.reason,
                        now=now,
                    )
                except DecisionRefused as e:
                    return DeviceStepResult(
                        state=ChangeState.AWAITING_CONFIRMATION,
                        detail=e.message,
                        refusal=DecisionRefusedSignal(
                            change_id=step.change_id,
                            decision=claim.decision,
                            operator_id=claim.by,
                            refusal=e.type,
                            detail=e.message,
                        ),
                    )
                return None  # this claim won it
            if row.decision != claim.decision.value or row.decided_by != claim.by:
                return self._won_by(row)
            return None
        # A timeout or an order closed the window as the change was loaded; a decision that
        # won it first is carried out instead.
        if row.decision is not None:
            return self._won_by(row)
        return None

    @staticmethod
    def _won_by(row: ChangeRow) -> DeviceStepResult:
        assert row.decision is not None  # called only for a decided change
        decision = DecisionSignal(
            change_id=row.change_id,
            decision=Decision(row.decision),
            operator_id=row.decided_by or "unknown",
            reason=row.decision_reason,
            attestation=(
                Attestation.model_validate(row.decision_attestation)
                if row.decision_attestation
                else None
            ),
        )
        return DeviceStepResult(
            state=ChangeState.AWAITING_CONFIRMATION,
            detail=f"decided first: {row.decision} by {row.decided_by}",
            decision=decision,
        )

    async def _confirm(
        self, step: _Step, inp: ChangeStepInput, armed_by: str | None
    ) -> DeviceStepResult:
        dialect = dialect_for(step.device.platform)
        unique = dedupe(step.changes)

        async def work(dev: _Device) -> tuple[str, _Snapshot]:
            snap = await dev.read(unique)
            if snap.pending and armed_by != step.change_id:
                # Confirming would accept someone else's change along with ours.
                raise ForeignPendingCommit(
                    f"{step.device.name} has an unconfirmed change that is not ours "
                    f"(armed by {armed_by or 'someone outside continuity'}); not confirmed"
                )
            if not _in_place(snap.configured, step.direction):
                return "reverted", snap
            if snap.pending:
                await dev.run(dialect.render_confirm())
                after = await dev.read(unique)
                if after.pending:
                    raise VerificationFailed(f"{step.device.name}: still pending after confirm")
                if not _in_place(after.configured, step.direction):
                    return "reverted", after  # the device's timer fired between read and confirm
                return "confirmed and saved", after
            # Confirmed before (a retry) or a platform without timers: saving twice is safe.
            await dev.run(dialect.persist_commands)
            return "confirmed and saved", snap

        how, snap = await self._session(step, "confirm", work)
        if how == "reverted":
            detail = "the device reverted the change before the confirmation reached it"
            return await self._settle(
                step,
                ChangeState.REVERTED_BY_DEVICE,
                detail,
                dict(self._key_parts(step, snap)),
                release=inp.release_lock,
                disarm=True,
            )
        kept = inp.claim.kind == "timeout"
        state = ChangeState.KEPT_ON_TIMEOUT if kept else ChangeState.CONFIRMED
        by = "the wave's keep-on-timeout policy" if kept else inp.claim.by
        return await self._settle(
            step,
            state,
            f"{how} ({by})",
            {k: PartState.BACKUP for k in step.keys.values()},
            release=inp.release_lock,
            disarm=True,
            verified=True,
        )

    async def _undo(
        self, step: _Step, inp: ChangeStepInput, armed_by: str | None, sent_before: bool
    ) -> DeviceStepResult:
        dialect = dialect_for(step.device.platform)
        t = step.timings
        unique = dedupe(step.changes)
        dialect.render_inverse(unique, step.direction)  # validate before connecting
        ours = armed_by == step.change_id

        def undone(s: _Snapshot) -> bool:
            # Someone else's timer may run on a device our change has left: not ours to end.
            return _original(s.configured, step.direction) and not (s.pending and ours)

        async def work(dev: _Device) -> tuple[str, _Snapshot, bool]:
            snap = await dev.read(unique)
            if snap.pending and not ours and not undone(snap):
                # Aborting it would end someone else's change too; the incident tries again.
                raise ForeignPendingCommit(
                    f"{step.device.name} has an unconfirmed change that is not ours "
                    f"(armed by {armed_by or 'someone outside continuity'}); not undone"
                )
            if inp.let_device_revert and snap.pending and dialect.native_auto_revert:
                # The device's own timer undoes it; we watch, with the pending command only.
                window = t.verify_timeout_s + t.revert_margin_s + t.revert_wait_grace_s
                ok, snap = await dev.poll(
                    unique,
                    until=lambda s: _original(s.configured, step.direction) and not s.pending,
                    timeout_s=window,
                    while_pending=True,
                )
                if ok:
                    return "reverted by the device's own timer", snap, True
            if undone(snap):
                # Found undone, and we never sent an undo: where the device was left to revert
                # by itself, its timer did it.
                by_device = inp.let_device_revert and dialect.native_auto_revert and not sent_before
                return "already original; nothing sent", snap, by_device
            how, by_device = await self._undo_on_device(dev, step, snap)
            return how, await dev.read(unique), by_device

        how, snap, by_device = await self._session(step, "undo", work)
        if not undone(snap):
            raise VerificationFailed(
                f"{step.device.name}: after undo the configuration is not original: "
                f"{_describe(snap.configured, unique)}"
            )
        state = ChangeState.REVERTED_BY_DEVICE if by_device else ChangeState.ROLLED_BACK
        claim = inp.claim
        why = {
            "decision": f"rejected by {claim.by}",
            "timeout": "no decision in the confirmation window",
            "order": claim.reason or f"ordered by {claim.by}",
        }[claim.kind]
        return await self._settle(
            step,
            state,
            f"{how} ({why})",
            {k: PartState.PRIMARY for k in step.keys.values()},
            release=inp.release_lock,
            disarm=True,
            verified=True,
        )

    async def _undo_on_device(self, dev: _Device, step: _Step, snap: _Snapshot) -> tuple[str, bool]:
        """Undo a change in an open session: abort the pending commit, else the inverse lines.

        Returns what happened and whether the device's own timer had done it first.
        """
        dialect = dev.dialect
        unique = dedupe(step.changes)
        if snap.pending and dialect.native_auto_revert:
            abort = dialect.render_rollback(unique, step.direction)
            try:
                await dev.run(abort)
            except CommandRejected:
                # e.g. `abort trial` just after the trial ran out: fine if it is undone.
                late = await dev.read(unique)
                if not (_original(late.configured, step.direction) and not late.pending):
                    raise
                return "the device had reverted by itself", True
            return "pending change aborted on the device", False
        await dev.run(dialect.render_inverse(unique, step.direction, present=snap.configured))
        return "inverse lines applied", False

    # --- helpers -------------------------------------------------------------------------

    def _changed(self, step: _Step) -> Callable[[_Snapshot], bool]:
        def judge(snap: _Snapshot) -> bool:
            # Forwarding on the new path, and the old one gone from forwarding and config.
            return _in_place(snap.active, step.direction) and all(
                not _old_new(c, step.direction)[0] for c in snap.configured
            )

        return judge

    async def _await_new_path(
        self, dev: _Device, step: _Step, unique: Sequence[RouteChange]
    ) -> None:
        """Make before break: the new next hop must forward before the old one is removed."""
        routed = [
            c for c in unique if RerouteMechanism(c.path.mechanism) is RerouteMechanism.STATIC_ROUTE
        ]
        if not routed:
            return  # a policy route's old path is plain routing: always there

        def new_active(snap: _Snapshot) -> bool:
            return all(_old_new(s, step.direction)[1] for s in snap.active)

        timeout_s = step.timings.verify_timeout_s
        ok, snap = await dev.poll(
            routed, until=new_active, timeout_s=timeout_s, forwarding_only=True
        )
        if not ok:
            raise VerificationFailed(
                f"{step.device.name}: the new path never became active within {timeout_s:g}s "
                f"({_describe(snap.active, routed)}); the old path was left in place"
            )

    def _by_key(
        self, step: _Step, states: Sequence[PathState]
    ) -> list[tuple[RouteChange, PathState]]:
        by_circuit = {s.circuit_id: s for s in states}
        # A circuit deduplicated away has no state of its own: it shares its key's.
        keyed = {step.keys[s.circuit_id]: s for s in states if s.circuit_id in step.keys}
        out = []
        for c in step.changes:
            s = by_circuit.get(c.circuit_id) or keyed.get(step.keys[c.circuit_id])
            if s is not None:
                out.append((c, s))
        return out

    def _expand(self, step: _Step, states: Sequence[PathState]) -> list[PathState]:
        """Path states for every change, those deduplicated away included."""
        return [
            s.model_copy(update={"circuit_id": c.circuit_id}) for c, s in self._by_key(step, states)
        ]

    def _key_parts(
        self, step: _Step, snap: _Snapshot, *, pending: bool = False
    ) -> list[tuple[str, PartState]]:
        return [
            (step.keys[c.circuit_id], _part(s, pending=pending))
            for c, s in self._by_key(step, snap.configured)
        ]

    async def _settle(
        self,
        step: _Step,
        state: ChangeState,
        detail: str,
        parts: dict[str, PartState],
        *,
        release: bool = False,
        disarm: bool = False,
        awaiting: bool = False,
        **extra: Any,
    ) -> DeviceStepResult:
        """One store transaction ends a step: its journal, the parts, the change's state (and
        window), our arm and lock; the result carries the journal the workflow lacks."""
        journal = step.journal
        t = step.timings

        def write() -> tuple[dict[str, PartState], list[JournalEntry], datetime | None]:
            with self._store.unit():
                if journal is not None:
                    journal.write_now("complete")
                recorded = (
                    self._store.set_parts(
                        device=step.device.name,
                        states=parts,
                        incident_id=step.incident_id,
                        change_id=step.change_id,
                        detail=detail,
                        circuits=step.keys,
                    )
                    if parts
                    else {}
                )
                rows = self._store.change_transcripts(step.change_id)
                deadline = _deadline(t, rows) if awaiting else None
                # What the operator's screen shows and a decision may name (a stale screen).
                shown = lines_sha256(_evidence(rows)[1]) if awaiting else None
                self._store.set_change_state(
                    step.change_id,
                    state.value,
                    detail=detail,
                    deadline=deadline,
                    lines_sha256=shown,
                )
                # Only our own arm: a later change's (a restore that ended this one) stays.
                if disarm:
                    self._store.disarm(
                        device=step.device.name, holder=step.incident_id, change_id=step.change_id
                    )
                if release:
                    self._store.unlock_device(device=step.device.name, holder=step.incident_id)
            return recorded, rows, deadline

        recorded, rows, deadline = await asyncio.to_thread(write)
        refs, commands = _evidence(rows)
        return DeviceStepResult(
            state=state,
            detail=detail[:_DETAIL_MAX],
            commands=commands[step.known.commands :],
            transcripts=refs[step.known.transcripts :],
            parts=recorded,
            deadline=deadline,
            **extra,
        )

    async def _begin(
        self, step: _Step, inp: DeviceStepInput
    ) -> tuple[str | None, dict[str, CircuitPartRow]]:
        """One store transaction starts an apply: the incident's lease on the device (another
        incident's is waited for by the workflow, never here holding a session slot), the
        change's record, and what the store knows of its parts and of a pending arm."""

        def write() -> tuple[str | None, dict[str, CircuitPartRow]]:
            with self._store.unit():
                other, armed_by = self._store.lock_device(
                    device=step.device.name,
                    holder=step.incident_id,
                    lease_s=step.timings.lease_s,
                    now=time.time(),
                )
                if other is not None:
                    raise DeviceLocked(
                        f"{step.device.name} is held by incident {other} until its change "
                        f"there is decided; {step.change_id} waits for it"
                    )
                prior = self._store.part_rows(step.device.name, list(step.keys))
                self._store.open_change(
                    change_id=step.change_id,
                    incident_id=step.incident_id,
                    device=step.device.name,
                    wave=inp.wave,
                    direction=step.direction.value,
                    circuits=[c.circuit_id for c in step.changes],
                    step={
                        "device": step.device.model_dump(mode="json"),
                        "direction": step.direction.value,
                        "changes": [c.model_dump(mode="json") for c in step.changes],
                    },
                    declared_by=inp.declared_by,
                    confirmers=inp.confirmers if step.direction is Direction.REROUTE else [],
                    state=ChangeState.APPLYING.value,
                )
            return armed_by, prior

        return await asyncio.to_thread(write)

    async def _resolve(
        self, snapshot: str, device: str, circuits: Sequence[str]
    ) -> tuple[Device, list[RouteChange]]:
        """The device and the circuits' paths on it, as the incident's snapshot has them."""

        def read(inv: Inventory) -> tuple[Device, list[RouteChange]]:
            try:
                dev = inv.device(device)
            except KeyError:
                raise ValidationFailed(
                    f"device {device!r} is not in the incident's inventory"
                ) from None
            by_id = {c.id: c for c in inv.circuits}
            missing = [c for c in circuits if c not in by_id]
            if missing:
                raise ValidationFailed(f"circuits not in the incident's inventory: {missing}")
            return dev, [
                RouteChange(circuit_id=c, path=p)
                for c in circuits
                for p in by_id[c].paths
                if p.device == device
            ]

        try:
            # Read once per worker, then from memory: no thread to wait for (200 steps starting
            # at once queue behind the store work of the others).
            inv = self._store.cached_snapshot(snapshot)
            if inv is None:
                inv = await asyncio.to_thread(self._store.snapshot, snapshot)
            return read(inv)
        except ContinuityError as e:
            raise application_error(e) from e

    async def _load(self, inp: ChangeStepInput) -> tuple[_Step, ChangeRow, str | None, bool] | None:
        """The change as apply recorded it, who armed its device, whether an undo already sent
        lines; for a timeout or an order the window is closed in the same transaction."""

        def read() -> tuple[ChangeRow, str | None, bool] | None:
            with self._store.unit():
                row = self._store.change(inp.change_id)
                if row is None:
                    return None
                armed_by = self._store.armed_by(row.device)
                if inp.claim.kind != "decision":
                    row = self._store.close_window(
                        inp.change_id, by=inp.claim.kind, now=datetime.now(UTC)
                    )
                    assert row is not None
                undone = any(
                    r.sent
                    for r in self._store.change_transcripts(inp.change_id)
                    if r.step == "undo"
                )
            return row, armed_by, undone

        loaded = await asyncio.to_thread(read)
        if loaded is None:
            return None
        row, armed_by, undone = loaded
        step = self._step_of(row, inp.timings, incident_id=inp.incident_id)
        step.known = inp.known
        return step, row, armed_by, undone

    @staticmethod
    def _step_of(row: ChangeRow, timings: StepTimings, *, incident_id: str = "") -> _Step:
        """A change as the store recorded it at apply: its device, direction and routes."""
        return _Step(
            incident_id or row.incident_id,
            row.change_id,
            Device.model_validate(row.step["device"]),
            Direction(row.step["direction"]),
            [RouteChange.model_validate(c) for c in row.step["changes"]],
            timings,
        )

    @staticmethod
    def _tid(step: _Step, name: str, attempt: int) -> str:
        """One transcript row per attempt of one execution of a step, found again by a retry.

        The workflow may schedule a step of a change again (a restore retried, a confirm
        driven after a failure); attempts count from 1 again, so the execution is in the id.
        """
        info = activity.info()
        key = "|".join(
            (info.workflow_id or "", info.workflow_run_id or "", info.activity_id)
            + (step.change_id, name, str(attempt))
        )
        return f"tr-{hashlib.sha1(key.encode()).hexdigest()[:20]}"

    async def _journal(self, step: _Step, *steps: str) -> list[JournalEntry]:
        """The change's journal rows (of the named steps, or every step), oldest first."""
        rows = await asyncio.to_thread(self._store.change_transcripts, step.change_id)
        return [r for r in rows if not steps or r.step in steps]

    def _credential(self, name: str) -> DeviceCredential:
        cred = self._settings.device_credentials.get(name)
        if cred is None:
            raise AuthenticationFailed(f"no device credential configured under {name!r}")
        return cred

    async def _session(self, step: _Step, name: str, work: Callable[[_Device], Awaitable[T]]) -> T:
        """Run `work` in the device's pooled session; the attempt's transcript is journalled."""
        dialect = dialect_for(step.device.platform)
        cred = self._credential(step.device.credential)
        secret = cred.password.get_secret_value() if cred.password else ""
        transcript = Transcript(secrets=[secret])
        attempt = activity.info().attempt
        journal = _Journal(
            self._store,
            transcript,
            self._tid(step, name, attempt),
            step.incident_id,
            step.change_id,
            step.device.name,
            name,
            attempt,
        )
        self.touched.add(step.device.name)
        step.journal = journal
        started = time.perf_counter()
        try:
            async with self._pool.session(
                step.device,
                credential=cred,
                known_hosts=self._settings.known_hosts_path,
                dialect=dialect,
                connect_timeout_s=self._settings.ssh_connect_timeout_s,
                command_timeout_s=self._settings.ssh_command_timeout_s,
                transcript=transcript,
            ) as cli:
                step.opening_s += time.perf_counter() - started
                result = await work(_Device(cli, dialect, journal))
        except BaseException as e:
            kind = e.type if isinstance(e, ContinuityError) else type(e).__name__
            transcript.note(f"{name} failed: {kind}: {e}")
            with contextlib.suppress(ContinuityError):
                await journal.write("failed")
            raise
        finally:
            step.session_s += time.perf_counter() - started
        return result  # the step's settle writes the journal "complete" with its bookkeeping

    @contextlib.asynccontextmanager
    async def _reporting(self, step: _Step, name: str) -> AsyncIterator[None]:
        """Heartbeat while the step runs; a failure leaves as ApplicationError carrying every
        attempt's transcript and every line sent, so the record references them. One log line
        a step says where its time went (bench/ reads them)."""
        started = time.perf_counter()
        # From Temporal handing the task to this worker to here: the SDK's dispatch on a busy
        # loop (and, for an apply, reading the snapshot).
        info = activity.info()
        late = (datetime.now(UTC) - info.started_time).total_seconds() if info.started_time else 0
        try:
            async with heartbeating(name):
                try:
                    yield
                except ContinuityError as e:
                    with contextlib.suppress(ContinuityError):
                        refs, commands = _evidence(await self._journal(step))
                        raise application_error(
                            e,
                            transcripts=[r.model_dump(mode="json") for r in refs],
                            commands=commands,
                        ) from e
                    raise application_error(e) from e
        finally:
            took = time.perf_counter() - started
            log.info(
                "step %s %s on %s: %.1f ms; in sessions %.1f ms (opening them %.1f ms); "
                "outside them %.1f ms; begun %.1f ms after Temporal started it",
                name,
                step.change_id,
                step.device.name,
                took * 1000,
                step.session_s * 1000,
                step.opening_s * 1000,
                (took - step.session_s) * 1000,
                late * 1000,
            )


__all__ = ["NetworkActivities"]
