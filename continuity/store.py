"""The SQLAlchemy store: inventory, transcripts, calls, locks, reports; one write path."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from continuity.errors import StorageError
from continuity.models import Area, Circuit, Device, DutyOfficer, Inventory, Operator


class Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class AreaRow(Base):
    __tablename__ = "areas"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class DeviceRow(Base):
    __tablename__ = "devices"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(64))
    credential: Mapped[str] = mapped_column(String(64))
    host_key: Mapped[str | None] = mapped_column(Text, nullable=True)


class CircuitRow(Base):
    __tablename__ = "circuits"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200))
    priority_class: Mapped[str] = mapped_column(String(32))
    restoration_level: Mapped[int] = mapped_column(Integer)
    area: Mapped[str] = mapped_column(ForeignKey("areas.id"))
    paths: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class DutyOfficerRow(Base):
    __tablename__ = "duty_officers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(2))
    escalation_order: Mapped[int] = mapped_column(Integer)


class OperatorRow(Base):
    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TranscriptRow(Base):
    __tablename__ = "transcripts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    change_id: Mapped[str] = mapped_column(String(200), index=True)
    device: Mapped[str] = mapped_column(String(63))
    step: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class CallRow(Base):
    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("incident_id", "attempt", name="uq_call_attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    officer_id: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(20))
    call_sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32), default="creating")
    digits: Mapped[str] = mapped_column(String(8), default="")
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("incident_id", "key", name="uq_message_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(200))
    officer_id: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(20))
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="creating")
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class DeviceLockRow(Base):
    __tablename__ = "device_locks"
    device: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[float] = mapped_column(Float)  # epoch seconds; a lease, not a forever lock


class ReportRow(Base):
    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    form: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Store:
    """The repository: every read and write of the app's tables goes through here."""

    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        with self._translate():
            Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as e:
            raise StorageError(f"store: {type(e).__name__}: {e}".splitlines()[0]) from e

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._translate(), self._sessions.begin() as session:
            yield session

    # --- inventory -----------------------------------------------------------------------

    def replace_inventory(self, inv: Inventory) -> None:
        """Load a whole inventory atomically: the old one is gone only if the new one fits."""
        with self._session() as s:
            for table in (CircuitRow, DeviceRow, AreaRow, DutyOfficerRow, OperatorRow):
                s.execute(delete(table))
            s.merge(MetaRow(key="province", value=inv.province))
            s.add_all(AreaRow(**a.model_dump()) for a in inv.areas)
            s.flush()
            s.add_all(DeviceRow(**d.model_dump(mode="json")) for d in inv.devices)
            s.add_all(
                CircuitRow(
                    **c.model_dump(mode="json", exclude={"paths"}),
                    paths=[p.model_dump(mode="json") for p in c.paths],
                )
                for c in inv.circuits
            )
            s.add_all(DutyOfficerRow(**o.model_dump(mode="json")) for o in inv.duty_officers)
            s.add_all(OperatorRow(**o.model_dump()) for o in inv.operators)

    def inventory(self) -> Inventory:
        with self._session() as s:
            meta = s.get(MetaRow, "province")
            return Inventory(
                province=meta.value if meta else "",
                areas=[Area(id=r.id, name=r.name) for r in s.scalars(select(AreaRow))],
                devices=[
                    Device(
                        name=r.name,
                        platform=r.platform,
                        host=r.host,
                        port=r.port,  # type: ignore[arg-type]
                        site=r.site,
                        credential=r.credential,
                        host_key=r.host_key,
                    )
                    for r in s.scalars(select(DeviceRow).order_by(DeviceRow.name))
                ],
                circuits=[
                    Circuit.model_validate(
                        {
                            "id": r.id,
                            "name": r.name,
                            "owner": r.owner,
                            "priority_class": r.priority_class,
                            "restoration_level": r.restoration_level,
                            "area": r.area,
                            "paths": r.paths,
                        }
                    )
                    for r in s.scalars(select(CircuitRow).order_by(CircuitRow.id))
                ],
                duty_officers=[
                    DutyOfficer.model_validate(
                        {
                            "id": r.id,
                            "name": r.name,
                            "phone": r.phone,
                            "language": r.language,
                            "escalation_order": r.escalation_order,
                        }
                    )
                    for r in s.scalars(
                        select(DutyOfficerRow).order_by(DutyOfficerRow.escalation_order)
                    )
                ],
                operators=[Operator(id=r.id, name=r.name) for r in s.scalars(select(OperatorRow))],
            )

    # --- transcripts ---------------------------------------------------------------------

    def save_transcript(
        self,
        *,
        incident_id: str,
        change_id: str,
        device: str,
        step: str,
        text: str,
        tid: str | None = None,
    ) -> tuple[str, str]:
        """Store a device session, or update it as it grows (same `tid`); returns (id, sha256).

        The history keeps only those two; a session cut short keeps what it had written.
        """
        digest = sha256_text(text)
        with self._session() as s:
            if tid is not None and (row := s.get(TranscriptRow, tid)) is not None:
                row.text, row.sha256 = text, digest
                return tid, digest
            tid = tid or f"tr-{uuid.uuid4().hex[:20]}"
            s.add(
                TranscriptRow(
                    id=tid,
                    incident_id=incident_id,
                    change_id=change_id,
                    device=device,
                    step=step,
                    sha256=digest,
                    text=text,
                )
            )
        return tid, digest

    def transcript(self, tid: str) -> TranscriptRow | None:
        with self._session() as s:
            return s.get(TranscriptRow, tid)

    def transcripts(self, incident_id: str) -> list[TranscriptRow]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(TranscriptRow)
                    .where(TranscriptRow.incident_id == incident_id)
                    .order_by(TranscriptRow.created_at)
                )
            )

    # --- calls and messages --------------------------------------------------------------

    def call_for_attempt(self, incident_id: str, attempt: int) -> CallRow | None:
        with self._session() as s:
            return s.scalars(
                select(CallRow).where(
                    CallRow.incident_id == incident_id, CallRow.attempt == attempt
                )
            ).first()

    def reserve_call(self, *, incident_id: str, attempt: int, officer_id: str, to: str) -> CallRow:
        """Claim the (incident, attempt) slot before dialling; a retry finds the claim."""
        with self._session() as s:
            row = s.scalars(
                select(CallRow).where(
                    CallRow.incident_id == incident_id, CallRow.attempt == attempt
                )
            ).first()
            if row is None:
                row = CallRow(
                    incident_id=incident_id,
                    attempt=attempt,
                    officer_id=officer_id,
                    to=to,
                    status="creating",
                    events=[],
                )
                s.add(row)
            return row

    def record_call_created(
        self, *, incident_id: str, attempt: int, call_sid: str, status: str
    ) -> None:
        with self._session() as s:
            row = s.scalars(
                select(CallRow).where(
                    CallRow.incident_id == incident_id, CallRow.attempt == attempt
                )
            ).one()
            row.call_sid, row.status = call_sid, status

    def record_call_event(
        self,
        *,
        call_sid: str,
        status: str = "",
        digits: str = "",
        raw: dict[str, str] | None = None,
    ) -> CallRow | None:
        with self._session() as s:
            row = s.scalars(select(CallRow).where(CallRow.call_sid == call_sid)).first()
            if row is None:
                return None
            if status:
                row.status = status
            if digits:
                row.digits = digits
            row.events = [
                *row.events,
                {"at": _now().isoformat(), "status": status, "digits": digits, **(raw or {})},
            ]
            return row

    def calls(self, incident_id: str) -> list[CallRow]:
        with self._session() as s:
            return list(
                s.scalars(
                    select(CallRow)
                    .where(CallRow.incident_id == incident_id)
                    .order_by(CallRow.attempt)
                )
            )

    def reserve_message(
        self, *, incident_id: str, key: str, officer_id: str, to: str, body: str
    ) -> MessageRow:
        with self._session() as s:
            row = s.scalars(
                select(MessageRow).where(
                    MessageRow.incident_id == incident_id, MessageRow.key == key
                )
            ).first()
            if row is None:
                row = MessageRow(
                    incident_id=incident_id,
                    key=key,
                    officer_id=officer_id,
                    to=to,
                    body=body,
                    status="creating",
                )
                s.add(row)
            return row

    def message_for_key(self, incident_id: str, key: str) -> MessageRow | None:
        with self._session() as s:
            return s.scalars(
                select(MessageRow).where(
                    MessageRow.incident_id == incident_id, MessageRow.key == key
                )
            ).first()

    def record_message_sent(self, *, incident_id: str, key: str, sid: str, status: str) -> None:
        with self._session() as s:
            row = s.scalars(
                select(MessageRow).where(
                    MessageRow.incident_id == incident_id, MessageRow.key == key
                )
            ).one()
            row.sid, row.status = sid, status

    # --- device locks --------------------------------------------------------------------

    def try_lock_device(
        self, *, device: str, holder: str, lease_s: float, now: float
    ) -> str | None:
        """Take or renew the device's lease; returns the current other holder if busy."""
        try:
            with self._session() as s:
                row = s.get(DeviceLockRow, device, with_for_update=True)
                if row is None:
                    s.add(DeviceLockRow(device=device, holder=holder, expires_at=now + lease_s))
                    return None
                if row.holder == holder or row.expires_at < now:
                    row.holder, row.expires_at = holder, now + lease_s
                    return None
                return row.holder
        except StorageError as e:
            if isinstance(e.__cause__, IntegrityError):  # two takers raced for a new row
                return "another holder"
            raise

    def unlock_device(self, *, device: str, holder: str) -> None:
        with self._session() as s:
            s.execute(
                delete(DeviceLockRow).where(
                    DeviceLockRow.device == device, DeviceLockRow.holder == holder
                )
            )

    # --- reports -------------------------------------------------------------------------

    def save_report(self, *, incident_id: str, form: str, text: str) -> tuple[str, str]:
        """Idempotent: the same report text for the same incident is stored once."""
        digest = sha256_text(text)
        with self._session() as s:
            existing = s.scalars(
                select(ReportRow).where(
                    ReportRow.incident_id == incident_id, ReportRow.sha256 == digest
                )
            ).first()
            if existing is not None:
                return existing.id, digest
            rid = f"rp-{uuid.uuid4().hex[:20]}"
            s.add(ReportRow(id=rid, incident_id=incident_id, form=form, sha256=digest, text=text))
        return rid, digest

    def reports(self, incident_id: str) -> list[ReportRow]:
        with self._session() as s:
            return list(s.scalars(select(ReportRow).where(ReportRow.incident_id == incident_id)))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


__all__ = ["Store", "sha256_text"]
