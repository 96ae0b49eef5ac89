"""Audit bundles: an incident's whole record in one directory, signed, verifiable offline.

A bundle holds the incident's workflow histories (and its call workflows'), every device
transcript, the store's call, SMS, change and decision records, the reports, and
``manifest.json``: the SHA-256 of every file, signed with the deployment's Ed25519 key
(``manifest.json.sig``). `verify_bundle` needs neither a server nor a database: it checks the
signature against keys the auditor trusts, every file's hash, that no file was added or
removed, that every history replays against this code, that every transcript the histories
reference is there with the hash they recorded, and that every command the histories say was
sent to a device is in one of that change's transcripts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from app.audit import replay
from continuity.attestation import (
    Action,
    Attestation,
    attestation_problem,
    key_fingerprint,
    raw_public_key,
)
from continuity.bundles import FORMAT, MANIFEST, SIGNATURE
from continuity.errors import ContinuityError, ValidationFailed
from continuity.incidents import Scope
from continuity.messages import (
    AbortInput,
    DecisionBatch,
    DecisionRefusedSignal,
    DecisionSignal,
    IncidentInput,
    StandDownInput,
    WriteOffInput,
)
from continuity.plan import device_lines
from continuity.report import LANGUAGES, REPORT_FORMAT, form_and_language, report_format
from continuity.signing import fingerprint, public_pem, sign, verify
from continuity.store import Store
from continuity.temporal import incident_input
from workflows.history_facts import HistoryFacts, history_facts

_UNLISTED = {MANIFEST, SIGNATURE}


@dataclass
class BundleReport:
    """What `verify_bundle` found: no problems means verified."""

    incident_id: str = ""
    key: str = ""
    files: int = 0
    histories: int = 0
    transcripts: int = 0
    commands: int = 0
    attestations: int = 0
    reports: int = 0  # stored reports re-rendered from the history and found equal
    rendered: int = 0  # lines sent found among those the recorded playbook renders
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- making one ----------------------------------------------------------------------------


async def make_bundle(
    client: Client, store: Store, incident_id: str, out: Path, key: Ed25519PrivateKey
) -> Path:
    """Write the bundle of a closed incident into `out` (a new or empty directory)."""
    if await asyncio.to_thread(lambda: out.exists() and any(out.iterdir())):
        raise ValidationFailed(f"{out} is not empty: a bundle is written into a new directory")
    handle = client.get_workflow_handle(incident_id)
    try:
        desc = await handle.describe()
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            raise ValidationFailed(
                f"no incident {incident_id!r} on this Temporal namespace (closed ones last as "
                "long as its retention: bundle them at close)"
            ) from None
        raise
    if desc.status is WorkflowExecutionStatus.RUNNING:
        raise ValidationFailed(f"incident {incident_id} is still running: bundle it once closed")
    histories = [await handle.fetch_history()]
    for child in _children(histories[0]):
        histories.append(await client.get_workflow_handle(child).fetch_history())

    files: dict[str, bytes] = {}
    for h in histories:
        files[f"histories/{h.workflow_id}.json"] = h.to_json().encode()
    transcripts = await asyncio.to_thread(store.transcripts, incident_id)
    for t in transcripts:
        files[f"transcripts/{t.id}.txt"] = t.text.encode()
    files["records/transcripts.json"] = _json_bytes([_record(t, _TRANSCRIPT) for t in transcripts])
    files.update(await asyncio.to_thread(_store_records, store, incident_id))
    manifest = {
        "format": FORMAT,
        "incident_id": incident_id,
        "created_at": datetime.now(UTC).isoformat(),
        "key": fingerprint(key.public_key()),
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
    }
    files["signing-key.pub"] = public_pem(key.public_key())
    manifest["files"]["signing-key.pub"] = _sha256(files["signing-key.pub"])  # type: ignore[index]
    body = _json_bytes(manifest)
    files[MANIFEST] = body
    files[SIGNATURE] = (sign(key, body) + "\n").encode()
    await asyncio.to_thread(_write, out, files)
    return out


def _write(out: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _record(row: Any, names: str) -> dict[str, Any]:
    """The named columns of a store row, times in ISO 8601."""
    out = {}
    for name in names.split():
        value = getattr(row, name)
        out[name] = _iso(value) if isinstance(value, datetime) else value
    return out


_CALL = "attempt officer_id to call_sid status digits events workflow_id created_at"
_MESSAGE = "key officer_id to sid status body created_at"
_CHANGE = (
    "change_id device wave direction circuits state detail declared_by deadline "
    "window_closed_at closed_by decision decided_by decision_reason decided_at"
)
_ATTEMPT = "change_id operator decision reason outcome detail at"
_TRANSCRIPT = "id change_id device step attempt status sent sha256 created_at"


def _store_records(store: Store, incident_id: str) -> dict[str, bytes]:
    out = {
        "records/calls.json": _json_bytes([_record(r, _CALL) for r in store.calls(incident_id)]),
        "records/messages.json": _json_bytes(
            [_record(r, _MESSAGE) for r in store.messages(incident_id)]
        ),
        "records/changes.json": _json_bytes(
            [_record(r, _CHANGE) for r in store.changes(incident_id)]
        ),
        "records/decision_attempts.json": _json_bytes(
            [_record(r, _ATTEMPT) for r in store.decision_attempts(incident_id)]
        ),
    }
    for r in store.reports(incident_id):
        out[f"reports/{r.id}-{r.form}.md"] = r.text.encode()
    return out


def _children(history: WorkflowHistory) -> list[str]:
    """The workflow ids of the children the incident started (its duty calls)."""
    out = []
    for e in history.events:
        if e.HasField("start_child_workflow_execution_initiated_event_attributes"):
            wid = e.start_child_workflow_execution_initiated_event_attributes.workflow_id
            if wid not in out:
                out.append(wid)
    return out


# --- verifying one -------------------------------------------------------------------------


def _check_files(
    path: Path, trusted: list[Ed25519PublicKey], report: BundleReport
) -> dict[str, bytes] | None:
    """The signature and every file's hash; the files' contents, or None if unreadable."""
    try:
        body = (path / MANIFEST).read_bytes()
        signature = (path / SIGNATURE).read_text(encoding="ascii").strip()
        manifest = json.loads(body)
        listed: dict[str, str] = manifest["files"]
        report.incident_id = manifest["incident_id"]
        report.key = manifest["key"]
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        report.problems.append(f"{path}: not a readable bundle ({e})")
        return None

    signer = next((k for k in trusted if verify(k, body, signature)), None)
    if signer is None:
        known = ", ".join(fingerprint(k) for k in trusted) or "none given"
        report.problems.append(
            f"manifest signature: not valid for any trusted key ({known}); the manifest names "
            f"{report.key}"
        )
    elif fingerprint(signer) != report.key:
        report.problems.append(
            f"manifest names key {report.key} but was signed by {fingerprint(signer)}"
        )

    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    for name in sorted(present - set(listed) - _UNLISTED):
        report.problems.append(f"{name}: in the bundle but not in its manifest")
    contents: dict[str, bytes] = {}
    for name, digest in sorted(listed.items()):
        if name not in present:
            report.problems.append(f"{name}: listed in the manifest but missing")
            continue
        data = (path / name).read_bytes()
        if _sha256(data) != digest:
            report.problems.append(f"{name}: changed (its SHA-256 is not the manifest's)")
        contents[name] = data
    report.files = len(contents)
    return contents


async def verify_bundle(path: Path, trusted: list[Ed25519PublicKey]) -> BundleReport:
    """Check a bundle offline; every discrepancy found is one line of `problems`."""
    report = BundleReport()
    contents = await asyncio.to_thread(_check_files, path, trusted, report)
    if contents is None:
        return report
    histories: list[WorkflowHistory] = []
    for name, data in contents.items():
        if name.startswith("histories/") and name.endswith(".json"):
            wid = name.removeprefix("histories/").removesuffix(".json")
            try:
                histories.append(WorkflowHistory.from_json(wid, data.decode()))
            except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
                report.problems.append(f"{name}: not a workflow history ({e})")
    if not any(h.workflow_id == report.incident_id for h in histories):
        report.problems.append(f"the incident's own history ({report.incident_id}) is missing")
    for h in histories:
        report.histories += 1
        if h.workflow_id == report.incident_id:  # replayed once: for itself and its reports
            try:
                facts = await history_facts(h)
            except ValidationFailed as e:
                report.problems.append(f"history {e}")
                continue
            _check_reports(contents, facts, report)
            continue
        outcome = await replay(h)
        if not outcome.ok:
            report.problems.append(f"history {h.workflow_id}: does not replay: {outcome.failure}")

    _check_journal(contents, histories, report)
    _check_rendered(histories, report)
    _check_attestations(histories, trusted, report)
    return report


async def verify_history(history: WorkflowHistory, trusted: list[Ed25519PublicKey]) -> BundleReport:
    """One history without its bundle: it replays, its human actions are attested, and every
    line it says was sent is one its playbook and inventory snapshot render."""
    report = BundleReport(incident_id=history.workflow_id, histories=1)
    outcome = await replay(history)
    if not outcome.ok:
        report.problems.append(f"history {history.workflow_id}: does not replay: {outcome.failure}")
    _check_attestations([history], trusted, report)
    _check_rendered([history], report)
    return report


def _payloads(value: Any) -> Iterator[Any]:
    """Every decoded JSON payload under a proto-JSON history fragment."""
    if isinstance(value, dict):
        for p in value.get("payloads", []) if isinstance(value.get("payloads"), list) else []:
            try:
                yield json.loads(base64.b64decode(p.get("data", "")))
            except (ValueError, TypeError):
                continue
        for k, v in value.items():
            if k != "payloads":
                yield from _payloads(v)
    elif isinstance(value, list):
        for v in value:
            yield from _payloads(v)


def _device_steps(history: WorkflowHistory) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(change id, device, result) of every device step the history completed; the device of
    a confirm or an undo (named by change id only) is its apply's."""
    events = json.loads(history.to_json())["events"]
    scheduled: dict[str, str] = {}
    devices: dict[str, str] = {}
    for e in events:
        attrs = e.get("activityTaskScheduledEventAttributes")
        if attrs:
            for inp in _payloads(attrs.get("input", {})):
                if isinstance(inp, dict) and "change_id" in inp:
                    scheduled[e["eventId"]] = inp["change_id"]
                    if isinstance(inp.get("device"), str):
                        devices.setdefault(inp["change_id"], inp["device"])
        done = e.get("activityTaskCompletedEventAttributes")
        if done and done.get("scheduledEventId") in scheduled:
            change_id = scheduled[done["scheduledEventId"]]
            for res in _payloads(done.get("result", {})):
                if isinstance(res, dict):
                    yield change_id, devices.get(change_id, ""), res


def _check_rendered(histories: list[WorkflowHistory], report: BundleReport) -> None:
    for h in histories:
        checked, problems = lines_not_rendered(h)
        report.rendered += checked
        report.problems += problems


def lines_not_rendered(history: WorkflowHistory) -> tuple[int, list[str]]:
    """How many lines an incident's history says were sent to devices, and one problem for
    each that its playbook and inventory snapshot (both in the history, both under the
    declaration's signature) do not render for that device: a command rewritten consistently
    in the history and the transcripts still fails here. Not an incident's history: (0, [])."""
    started = history.events[0] if history.events else None
    if started is None or (
        started.workflow_execution_started_event_attributes.workflow_type.name != "Incident"
    ):
        return 0, []
    try:
        inp = incident_input(started, history.workflow_id)
        allowed = device_lines(
            inp.playbook,
            inp.inventory,
            kind=inp.incident.kind,
            timings=inp.timings,
            scope=Scope.of(inp.incident),
        )
    except ContinuityError as e:
        return 0, [f"history {history.workflow_id}: its changes cannot be re-rendered ({e})"]
    checked, problems = 0, []
    for change_id, device, res in _device_steps(history):
        for line in res.get("commands", []):
            checked += 1
            if line not in allowed.get(device, set()):
                problems.append(
                    f"{change_id}: the history says {line!r} was sent to {device or '?'}, "
                    "a line its playbook and inventory snapshot do not render"
                )
    return checked, problems


# Signals that carry a human action, and the model of their input.
_HUMAN_SIGNALS: dict[str, type[BaseModel]] = {
    "decide": DecisionSignal,
    "decisions": DecisionBatch,
    "decision_refused": DecisionRefusedSignal,
    "stand_down": StandDownInput,
    "abort": AbortInput,
    "write_off": WriteOffInput,
}


def _check_attestations(
    histories: list[WorkflowHistory], trusted: list[Ed25519PublicKey], report: BundleReport
) -> None:
    """Every human action in an incident's history is attested by a key the auditor trusts:
    the declaration, each decision (signalled, or found in the store by a device step), each
    stand-down, abort and write-off. A rewritten operator id or reason fails its attestation."""
    keys = [raw_public_key(k) for k in trusted]
    for h in histories:
        events = json.loads(h.to_json())["events"]
        started = events[0].get("workflowExecutionStartedEventAttributes", {})
        if started.get("workflowType", {}).get("name") != "Incident":
            continue
        try:
            (raw,) = _payloads(started.get("input", {}))
            inp = IncidentInput.model_validate(raw)
        except (ValueError, TypeError) as err:
            report.problems.append(f"history {h.workflow_id}: its input does not decode ({err})")
            continue
        if not inp.attestation_keys:
            report.problems.append(
                f"history {h.workflow_id}: human actions are not signed (the deployment had "
                "no signing key)"
            )
            continue
        for raw_key in inp.attestation_keys:
            if raw_key not in keys:
                report.problems.append(
                    f"history {h.workflow_id}: the incident trusted key "
                    f"{key_fingerprint(raw_key)}, which is not one of the auditor's"
                )
        for act in _human_actions(inp, events, report, h.workflow_id):
            report.attestations += 1
            why = attestation_problem(
                act.attestation,
                keys,
                action=act.action,
                incident_id=inp.incident.id,
                subject=act.subject,
                content=act.content,
                change_id=act.change_id,
            )
            if why:
                report.problems.append(
                    f"{h.workflow_id} {act.where}: {act.action} by {act.subject}: {why}"
                )


@dataclass(frozen=True)
class _Act:
    where: str
    attestation: Attestation | None
    action: Action
    subject: str
    content: dict[str, str]
    change_id: str = ""


def _decision_act(where: str, d: DecisionSignal) -> _Act:
    return _Act(where, d.attestation, "decide", d.operator_id, d.attested(), d.change_id)


def _refusal_act(where: str, r: DecisionRefusedSignal) -> _Act:
    """A refusal the API signed (one it did not sign the workflow notes without a name: an
    auditor has nothing to check there)."""
    return _Act(where, r.attestation, "decide_refused", r.operator_id, r.attested(), r.change_id)


def _human_actions(
    inp: IncidentInput, events: list[dict[str, Any]], report: BundleReport, wid: str
) -> Iterator[_Act]:
    i = inp.incident
    yield _Act("declaration", inp.declaration, "declare", i.declared_by, inp.attested())
    for event in events:
        sig = event.get("workflowExecutionSignaledEventAttributes")
        if sig and sig.get("signalName") in _HUMAN_SIGNALS:
            name = sig["signalName"]
            where = f"event {event['eventId']} ({name})"
            for body in _payloads(sig.get("input", {})):
                try:
                    msg = _HUMAN_SIGNALS[name].model_validate(body)
                except (ValueError, TypeError) as err:
                    report.problems.append(f"{wid} {where}: does not decode ({err})")
                    continue
                if isinstance(msg, DecisionBatch):
                    yield from (_decision_act(where, d) for d in msg.decisions)
                    yield from (_refusal_act(where, r) for r in msg.refusals if r.attestation)
                elif isinstance(msg, DecisionRefusedSignal) and msg.attestation:
                    yield _refusal_act(where, msg)
                elif isinstance(msg, DecisionSignal):
                    yield _decision_act(where, msg)
                elif isinstance(msg, StandDownInput):
                    yield _Act(where, msg.attestation, "stand_down", msg.by, msg.attested())
                elif isinstance(msg, AbortInput):
                    yield _Act(where, msg.attestation, "abort", msg.by, msg.attested())
                elif isinstance(msg, WriteOffInput):
                    yield _Act(
                        where, msg.attestation, "write_off", msg.by, msg.attested(), msg.device
                    )
        done = event.get("activityTaskCompletedEventAttributes")
        for res in _payloads(done.get("result", {})) if done else ():
            if isinstance(res, dict) and isinstance(res.get("decision"), dict):
                try:
                    d = DecisionSignal.model_validate(res["decision"])
                except (ValueError, TypeError):
                    continue
                yield _decision_act(f"event {event['eventId']} (a decision the store held)", d)


def _check_reports(contents: dict[str, bytes], facts: HistoryFacts, report: BundleReport) -> None:
    """Every stored report of the current format equals the one its history renders (an
    older format is read by people, not compared: its layout was another)."""
    for name, data in sorted(contents.items()):
        if not (name.startswith("reports/") and name.endswith(".md")):
            continue
        parts = name.removeprefix("reports/").removesuffix(".md").split("-", 2)
        text = data.decode("utf-8", errors="replace")
        if len(parts) != 3 or report_format(text) != REPORT_FORMAT:
            continue
        form, lang = form_and_language(parts[2])
        if lang not in LANGUAGES or form not in ("timeline", "dossier_2c"):
            report.problems.append(f"{name}: not a report form this version knows")
        elif not facts.matches(text, form, lang):
            report.problems.append(
                f"{name}: does not match the {form} ({lang}) its history renders "
                "(`continuity audit report` shows what the history says)"
            )
        else:
            report.reports += 1


def _check_journal(
    contents: dict[str, bytes], histories: list[WorkflowHistory], report: BundleReport
) -> None:
    try:
        meta = json.loads(contents.get("records/transcripts.json", b"[]"))
        by_change: dict[str, list[str]] = defaultdict(list)
        for t in meta:
            by_change[t["change_id"]].append(t["id"])
    except (ValueError, KeyError, TypeError) as e:
        report.problems.append(f"records/transcripts.json: unreadable ({e})")
        return
    texts = {
        name.removeprefix("transcripts/").removesuffix(".txt"): data.decode(errors="replace")
        for name, data in contents.items()
        if name.startswith("transcripts/")
    }
    for h in histories:
        for change_id, _device, res in _device_steps(h):
            for ref in res.get("transcripts", []):
                report.transcripts += 1
                tid, digest = ref.get("id", ""), ref.get("sha256", "")
                data = contents.get(f"transcripts/{tid}.txt")
                if data is None:
                    report.problems.append(
                        f"{change_id}: transcript {tid} is referenced by the history but "
                        "missing from the bundle"
                    )
                elif _sha256(data) != digest:
                    report.problems.append(
                        f"{change_id}: transcript {tid} does not match the hash the history "
                        "recorded"
                    )
            session = "\n".join(texts.get(t, "") for t in by_change.get(change_id, []))
            for line in res.get("commands", []):
                report.commands += 1
                if line not in session:
                    report.problems.append(
                        f"{change_id}: the history says {line!r} was sent, but no transcript "
                        "of the change shows it"
                    )


__all__ = ["BundleReport", "lines_not_rendered", "make_bundle", "verify_bundle", "verify_history"]
