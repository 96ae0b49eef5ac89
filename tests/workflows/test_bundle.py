"""Audit bundles of a real incident on the lab: verified offline; any tampering fails them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.archive import Archive, start_archive
from app.bundle import MANIFEST, SIGNATURE, make_bundle, verify_bundle
from app.cli import run
from app.stack import Stack
from continuity.checks import retention_problem
from continuity.errors import ConfigurationError, ValidationFailed
from continuity.models import Decision, IncidentKind, Role
from continuity.period import period_report
from continuity.playbook import CallDutyOfficers, Report
from continuity.settings import Settings
from continuity.signing import (
    fingerprint,
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign,
)
from tests.conftest import TEST_TIMINGS
from tests.workflows.helpers import decide_until_active, stand_down, start_incident, two_waves


@pytest.fixture(scope="module")
def keys(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The deployment's key (it signed the actions and signs the bundles), another's .pub."""
    other = generate_key_pair(tmp_path_factory.mktemp("keys") / "other.key")
    assert stack.settings.signing_key_path.name == "signing.key"
    return stack.settings.signing_key_path, other.public_path


async def _closed_bundle(stack: Stack, keys: tuple[Path, Path], out: Path) -> Path:
    spec = two_waves(first=[1, 2, 3, 4, 5])
    spec.steps.insert(1, CallDutyOfficers(message_vi="Sự cố", message_en="Incident", rounds=1))
    spec.steps.append(Report(form="dossier_2c"))
    handle = await start_incident(stack, "ngoc-hoi", spec=spec)
    with pytest.raises(ValidationFailed, match="still running"):
        await make_bundle(
            stack.client, stack.store, handle.id, out / "early", load_private_key(keys[0])
        )
    await decide_until_active(stack, handle)
    await stand_down(handle)
    return await make_bundle(
        stack.client, stack.store, handle.id, out / "bundle", load_private_key(keys[0])
    )


async def _cli(*argv: str) -> int:
    """A `continuity` command as the CLI runs it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(run, list(argv))


async def test_a_bundle_verifies_offline_and_any_change_fails_it(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = await _closed_bundle(stack, keys, tmp_path)
    ours = load_public_key(keys[0].with_name("signing.key.pub"))
    other = load_public_key(keys[1])
    manifest = json.loads((bundle / MANIFEST).read_text())
    files = manifest["files"]
    assert any(n.startswith("transcripts/") for n in files)
    assert any(n.startswith("histories/calls-") for n in files)  # the duty calls' history too
    assert {"records/calls.json", "records/decision_attempts.json"} <= set(files)

    report = await verify_bundle(bundle, [ours])
    assert report.ok, report.problems
    assert report.histories >= 2 and report.transcripts > 0 and report.commands > 0
    assert report.reports == 4  # timeline and dossier, English and Vietnamese, re-rendered
    assert report.rendered == report.commands  # every line sent, re-rendered from the playbook
    pub = keys[0].with_name("signing.key.pub")
    assert await _cli("audit", "verify", str(bundle), "--key", str(pub)) == 0
    assert "verified: INC-" in capsys.readouterr().out

    # The wrong key (an auditor given another deployment's key) fails it.
    assert not (await verify_bundle(bundle, [other])).ok

    def tampered(name: str) -> Path:
        copy = tmp_path / f"tampered-{name}"
        shutil.copytree(bundle, copy)
        return copy

    # One byte changed in a transcript: its manifest hash and the history's reference fail.
    t = tampered("byte")
    transcript = next((t / "transcripts").iterdir())
    data = bytearray(transcript.read_bytes())
    data[len(data) // 2] ^= 0x01
    transcript.write_bytes(bytes(data))
    problems = (await verify_bundle(t, [ours])).problems
    assert any("changed" in p and transcript.name in p for p in problems), problems
    assert any("does not match the hash the history recorded" in p for p in problems), problems

    # A removed file.
    t = tampered("removed")
    (t / "records" / "calls.json").unlink()
    problems = (await verify_bundle(t, [ours])).problems
    assert any("records/calls.json: listed in the manifest but missing" in p for p in problems)
    assert await _cli("audit", "verify", str(t), "--key", str(pub)) == 1
    out = capsys.readouterr().out
    assert "NOT VERIFIED" in out and "- records/calls.json: listed" in out

    # An added file.
    t = tampered("added")
    (t / "records" / "extra.json").write_text("[]")
    problems = (await verify_bundle(t, [ours])).problems
    assert any("extra.json: in the bundle but not in its manifest" in p for p in problems)

    # The manifest edited to match an altered transcript: the signature no longer holds.
    t = tampered("resigned")
    m = json.loads((t / MANIFEST).read_text())
    m["created_at"] = "2020-01-01T00:00:00+00:00"
    (t / MANIFEST).write_text(json.dumps(m))
    problems = (await verify_bundle(t, [ours])).problems
    assert any("signature" in p for p in problems), problems


async def test_an_altered_command_in_the_history_fails_verification(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle = await _closed_bundle(stack, keys, tmp_path)
    incident = json.loads((bundle / MANIFEST).read_text())["incident_id"]
    # An insider rewrites the history (and re-signs with a key of their own): replay still
    # passes the order of commands, but the device lines no longer match the transcripts.
    history = bundle / "histories" / f"{incident}.json"
    doc = json.loads(history.read_text())
    for e in doc["events"]:
        done = e.get("activityTaskCompletedEventAttributes")
        if not done:
            continue
        p = done["result"]["payloads"][0]
        res = json.loads(base64.b64decode(p["data"]))
        if res.get("commands"):
            res["commands"][0] = res["commands"][0] + " 203.0.113.66"
            p["data"] = base64.b64encode(json.dumps(res).encode()).decode()
            break
    history.write_text(json.dumps(doc))
    own = load_public_key(keys[0].with_name("signing.key.pub"))
    problems = (await verify_bundle(bundle, [own])).problems
    assert any("203.0.113.66" in p and "no transcript" in p for p in problems), problems
    # And the playbook and inventory the declaration signed render no such line either.
    assert any("203.0.113.66" in p and "do not render" in p for p in problems), problems


async def test_cli_refuses_a_missing_bundle_and_a_bundle_without_trusted_key(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing"
    assert await _cli("audit", "verify", str(missing), "--key", str(keys[1])) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such file or directory\n"
    (tmp_path / "empty").mkdir()
    assert await _cli("audit", "verify", str(tmp_path / "empty"), "--key", str(keys[1])) == 1


async def test_the_archive_bundles_each_closed_incident_once(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    archive = Archive(stack.client, stack.store, tmp_path / "archive", load_private_key(keys[0]))
    running = await start_incident(stack, "ngoc-hoi", spec=two_waves(first=[1, 2, 3, 4, 5]))
    await decide_until_active(stack, running)
    closed = await _closed_bundle(stack, keys, tmp_path)  # another incident, closed
    incident = json.loads((closed / MANIFEST).read_text())["incident_id"]

    archived = await archive.sweep()
    assert incident in archived and running.id not in archived
    own = load_public_key(keys[0].with_name("signing.key.pub"))
    assert (await verify_bundle(tmp_path / "archive" / incident, [own])).ok
    assert incident not in await archive.sweep()  # never rewritten
    assert not [p for p in (tmp_path / "archive").iterdir() if p.name.startswith(".")]

    await stand_down(running)
    assert running.id in await archive.sweep()  # once it closed


def test_record_keeping_check_at_start(tmp_path: Path) -> None:
    short = Settings(record_period_days=3650)
    assert "no archive is configured" in (retention_problem(short, 30) or "")
    assert retention_problem(short, 4000) is None
    assert retention_problem(short.model_copy(update={"archive_dir": tmp_path}), 30) is None


async def test_production_refuses_a_short_retention_without_archive(
    stack: Stack, tmp_path: Path
) -> None:
    # The dev server keeps closed histories a day; production needs an archive for the record.
    prod = stack.settings.model_copy(update={"production": True, "archive_dir": None})
    with pytest.raises(ConfigurationError, match="no archive is configured"):
        await start_archive(stack.client, stack.store, prod)
    nokey = stack.settings.model_copy(
        update={"archive_dir": tmp_path / "a", "signing_key": tmp_path / "none.key"}
    )
    with pytest.raises(ConfigurationError, match="continuity keys generate"):
        await start_archive(stack.client, stack.store, nokey)


async def test_a_rewritten_operator_id_fails_verification(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle = await _closed_bundle(stack, keys, tmp_path)
    own = load_public_key(keys[0].with_name("signing.key.pub"))
    report = await verify_bundle(bundle, [own])
    assert report.ok and report.attestations >= 3  # declaration, decisions, stand-down
    incident = json.loads((bundle / MANIFEST).read_text())["incident_id"]
    history = bundle / "histories" / f"{incident}.json"
    doc = json.loads(history.read_text())
    for e in doc["events"]:
        sig = e.get("workflowExecutionSignaledEventAttributes")
        if sig and sig["signalName"] == "decisions":
            p = sig["input"]["payloads"][0]
            batch = json.loads(base64.b64decode(p["data"]))
            batch["decisions"][0]["operator_id"] = "op-somebody-else"
            p["data"] = base64.b64encode(json.dumps(batch).encode()).decode()
            break
    else:
        raise AssertionError("no decisions signal in the history")
    history.write_text(json.dumps(doc))
    problems = (await verify_bundle(bundle, [own])).problems
    assert any(
        "decide by op-somebody-else" in p and "not what the API signed" in p for p in problems
    ), problems


async def test_reports_render_from_the_history_alone_and_a_rewritten_one_fails(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = await _closed_bundle(stack, keys, tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    incident = manifest["incident_id"]
    stored = {
        n.removeprefix("reports/").split("-", 2)[2]: n
        for n in manifest["files"]
        if n.startswith("reports/")
    }
    assert {"timeline.md", "timeline.vi.md", "dossier_2c.md", "dossier_2c.vi.md"} <= set(stored)

    # Offline, from the history alone (here the bundle's), the same text as stored at close.
    for form, lang in [("dossier_2c", "vi"), ("dossier_2c", "en"), ("timeline", "vi")]:
        out = tmp_path / f"{form}.{lang}.md"
        argv = ["audit", "report", str(bundle), "--form", form, "--lang", lang, "-o", str(out)]
        assert await _cli(*argv) == 0
        suffix = "" if lang == "en" else f".{lang}"
        assert out.read_text() == (bundle / stored[f"{form}{suffix}.md"]).read_text()
    history = bundle / "histories" / f"{incident}.json"
    argv = ["audit", "report", str(history), "--lang", "vi", "--format", "html"]
    capsys.readouterr()
    assert await _cli(*argv) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!doctype html>") and '<html lang="vi">' in page
    assert "Hồ sơ gửi Công an" in page and "Thời gian khôi phục theo mức" in page

    # The dossier names the circuits with their owners, and each level's time to restore.
    dossier = (bundle / stored["dossier_2c.md"]).read_text()
    assert "| 1 | " in dossier.split("## Time to restore per restoration level")[1]
    assert "Provincial Military Command" in dossier or "Provincial Police" in dossier
    assert "Signing keys (attest every human action): `SHA256:" in dossier

    # An insider with the signing key rewrites who acknowledged and re-signs the manifest:
    # the signature holds, the report no longer matches its history.
    name = stored["dossier_2c.md"]
    forged = dossier.replace("- Acknowledged by: ", "- Acknowledged by: nobody; was ", 1)
    assert forged != dossier
    (bundle / name).write_text(forged)
    manifest["files"][name] = hashlib.sha256(forged.encode()).hexdigest()
    body = json.dumps(manifest).encode()
    (bundle / MANIFEST).write_bytes(body)
    (bundle / SIGNATURE).write_text(sign(load_private_key(keys[0]), body) + "\n")
    own = load_public_key(keys[0].with_name("signing.key.pub"))
    problems = (await verify_bundle(bundle, [own])).problems
    assert problems == [
        f"{name}: does not match the dossier_2c (en) its history renders "
        "(`continuity audit report` shows what the history says)"
    ]


async def test_cli_verifies_a_single_history_and_its_signed_actions(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = await _closed_bundle(stack, keys, tmp_path)
    incident = json.loads((bundle / MANIFEST).read_text())["incident_id"]
    history = bundle / "histories" / f"{incident}.json"
    pub = keys[0].with_name("signing.key.pub")
    assert await _cli("audit", "verify", str(history), "--key", str(pub)) == 0
    assert "signed actions" in capsys.readouterr().out
    # Another deployment's key: none of the actions is attested by a key the auditor trusts.
    assert await _cli("audit", "verify", str(history), "--key", str(keys[1])) == 1
    assert "not one of the auditor's" in capsys.readouterr().out


async def test_the_period_report_counts_three_incidents_from_their_bundles(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = load_private_key(keys[0])
    archive = tmp_path / "archive"
    start = datetime.now(UTC)
    # A: every circuit of Ngọc Hồi confirmed; the duty officers phoned (the sandbox presses 1).
    spec = two_waves(first=[1, 2], second=[3, 4, 5])
    spec.steps.insert(1, CallDutyOfficers(message_vi="Sự cố", message_en="Incident", rounds=1))
    # Its level 3 must be on backup within a millisecond (it cannot): a breach; level 1 has an hour.
    targets = TEST_TIMINGS.model_copy(update={"restore_targets_s": {1: 3600.0, 3: 0.001}})
    a = await start_incident(stack, "ngoc-hoi", spec=spec, timings=targets)
    await decide_until_active(stack, a)
    # B: Đắk Hà, its one change rejected by the operator.
    b = await start_incident(
        stack, "dak-ha", spec=two_waves(first=[1, 2, 3, 4, 5]), kind=IncidentKind.RIOT
    )
    await decide_until_active(stack, b, Decision.REJECT)
    # C: Đắk Tô, nobody answers within a short window: rolled back on timeout.
    short = TEST_TIMINGS.model_copy(update={"confirm_window_s": 4})
    c = await start_incident(stack, "dak-to", spec=two_waves(first=[1, 2, 3, 4, 5]), timings=short)
    await decide_until_active(stack, c, None)
    for h in (a, b, c):
        await stand_down(h)
        await make_bundle(stack.client, stack.store, h.id, archive / h.id, key)
    end = datetime.now(UTC)

    report = period_report(archive, start, end)
    assert [f.incident_id for f in report.incidents] == [a.id, b.id, c.id]
    fa, fb, fc = report.incidents
    assert (fa.kind, fa.area, fb.kind) == ("sabotage", "ngoc-hoi", "riot")
    assert fa.circuits_by_class == {"armed_forces": 2, "party": 1}
    assert set(fa.restore_s_by_level) == {1, 2, 3} and not fa.not_restored
    assert all(0 < s < (end - start).total_seconds() for s in fa.restore_s_by_level.values())
    assert fa.restore_s_by_level[1] <= fa.restore_s_by_level[3]  # level 1 first
    assert (fa.confirmed, fa.rejected, fa.unanswered) == (2, 0, 0)
    assert fa.calls >= 1 and fa.acknowledged_by and fa.ack_s is not None and fa.ack_s > 0
    assert (fb.confirmed, fb.rejected) == (0, 1) and fb.not_restored == []
    assert (fc.confirmed, fc.rejected, fc.unanswered) == (0, 0, 1)
    assert fb.calls == 0 and fb.acknowledged_by is None
    assert fa.breaches == [3] and fb.breaches == [] and fc.breaches == []

    # Outside the period: nothing. The CLI prints both languages.
    assert period_report(archive, end, end + timedelta(days=1)).incidents == []
    code = await _cli(
        "report", "period", "--from", start.isoformat(), "--to", end.isoformat(),
        "--archive", str(archive),
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "Báo cáo định kỳ" in out and "Periodic report" in out and a.id in out
    assert "lực lượng vũ trang 2" in out and "armed forces 2" in out
    assert "| Time targets missed |" in out and "| L3 |" in out
    signer = fingerprint(load_private_key(keys[0]).public_key())
    assert f"Keys that signed the bundles (check with `continuity audit verify`): `{signer}`" in out


async def test_the_period_report_route_is_the_auditors_and_reads_the_archive(
    stack: Stack, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    import httpx

    from tests.workflows.helpers import auth

    closed = await _closed_bundle(stack, keys, tmp_path)
    incident = json.loads((closed / MANIFEST).read_text())["incident_id"]
    params = {"from": "2020-01-01T00:00:00+07:00", "to": "2100-01-01T00:00:00+07:00"}
    assert stack.settings is not None
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as api:
        r = await api.get("/reports/period", params=params, headers=auth(stack, Role.AUDITOR))
        assert r.status_code == 409 and r.json()["error"] == "NoArchive"
        stack.settings.archive_dir = tmp_path / "bundle-parent"
        try:
            (tmp_path / "bundle-parent").mkdir()
            closed.rename(tmp_path / "bundle-parent" / incident)
            r = await api.get(
                "/reports/period",
                params={**params, "lang": "en"},
                headers=auth(stack, Role.AUDITOR),
            )
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/markdown")
            assert r.headers["x-content-type-options"] == "nosniff"
            assert incident in r.text and "Periodic report" in r.text
            r = await api.get("/reports/period", params=params, headers=auth(stack, Role.OPERATOR))
            assert r.status_code == 403
        finally:
            stack.settings.archive_dir = None
