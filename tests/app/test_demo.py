"""`continuity demo` end to end: the stored dossier is written when its facts are final, and the
printed timeline fits a NOC terminal and names every call."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from app.audit import load_history, replay
from app.bundle import verify_bundle
from app.demo import run_demo
from continuity.signing import load_public_key
from continuity.store import Store


@dataclass
class Call:
    """One call attempt as the store recorded it, with the SMS sent when it went unanswered."""

    officer_id: str
    call_sid: str | None
    digits: str
    sms_sid: str | None


@dataclass
class DemoRun:
    data_dir: Path
    code: int
    lines: list[str]  # as printed: each echo split at its line ends
    incident: str
    calls: list[Call]


@pytest_asyncio.fixture(scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One run of the real demo (about 10 s), shared by the tests of this module."""
    data_dir = tmp_path_factory.mktemp("demo")
    echoed: list[str] = []
    code = await run_demo(data_dir, echo=echoed.append)
    (history,) = (data_dir / "histories").glob("INC-*.json")
    store = Store(f"sqlite:///{data_dir / 'continuity.db'}")
    try:
        calls = []
        for row in store.calls(history.stem):
            sms = store.message_for_key(history.stem, f"fallback-{row.attempt}")
            calls.append(Call(row.officer_id, row.call_sid, row.digits, sms and sms.sid))
    finally:
        store.close()
    lines = [line for text in echoed for line in text.split("\n")]
    return DemoRun(data_dir, code, lines, history.stem, calls)


async def test_demo_stored_dossier_names_the_officer_who_pressed_1(demo: DemoRun):
    assert demo.code == 0, "\n".join(demo.lines)
    store = Store(f"sqlite:///{demo.data_dir / 'continuity.db'}")
    try:
        dossiers = [r for r in store.reports(demo.incident) if r.form == "dossier_2c"]
    finally:
        store.close()
    assert len(dossiers) == 1  # written once, at close
    acked = [c for c in demo.calls if c.digits == "1"]
    assert acked, demo.calls
    text = dossiers[0].text
    assert f"Acknowledged by: {acked[0].officer_id}" in text
    assert "| no | " in text and "| yes | " in text  # the missed call and the answered one
    # The saved histories replay offline, the duty calls' too.
    histories = sorted((demo.data_dir / "histories").rglob("*.json"))
    assert len(histories) >= 2
    for h in histories:
        outcome = await replay(load_history(h))
        assert outcome.ok, (h.name, outcome.failure)
    meta = demo.data_dir / "histories" / f"{demo.incident}.meta"
    assert json.loads(meta.read_text())["workflow_id"]
    # Its signed bundle verifies offline with the key the auditor is handed, the signed
    # human actions included (declaration, decisions, stand-down).
    bundle = demo.data_dir / "bundles" / demo.incident
    key = load_public_key(demo.data_dir / "bundles" / "signing-key.pub")
    report = await verify_bundle(bundle, [key])
    assert report.ok, report.problems
    assert report.attestations >= 3 and report.commands > 0
    assert "  verified: yes" in "\n".join(demo.lines)


def test_demo_printed_timeline_fits_120_columns_and_shows_every_call(demo: DemoRun):
    assert demo.code == 0, "\n".join(demo.lines)
    # Paths are printed whole so they can be copied; only the data directory's own length,
    # which the user chose, may take a line past 120 columns.
    too_wide = [ln for ln in demo.lines if len(ln.replace(str(demo.data_dir), "DATA")) > 120]
    assert not too_wide, too_wide
    printed = "\n".join(demo.lines)
    missed = [c for c in demo.calls if c.digits != "1" and c.sms_sid]
    acked = [c for c in demo.calls if c.digits == "1"]
    assert missed and acked, demo.calls
    # The officer who did not answer: the call, how it ended, and the SMS sent instead.
    assert f"({missed[0].officer_id}): no-answer, not acknowledged" in printed
    assert f"call sid {missed[0].call_sid}" in printed
    assert f"SMS fallback sent, sid {missed[0].sms_sid}" in printed
    # The officer who pressed 1.
    assert f"({acked[0].officer_id}): acknowledged" in printed
    assert re.search(rf"  acknowledged by: .+ \({acked[0].officer_id}\)$", printed, re.M)
    # Times on the NOC's clock, and the header says which clock that is.
    assert "times in Asia/Ho_Chi_Minh (UTC+7)" in printed
    stamped = [ln for ln in demo.lines if re.match(r"  \d\d:\d\d:\d\d\.\d{3} ", ln)]
    assert len(stamped) > 20, stamped
    assert all(re.match(r"  \d\d:\d\d:\d\d\.\d{3} \+07  \S", ln) for ln in stamped), stamped
    assert re.search(r"declared by \S+ at \S+ \S+ \+07 \(\S+ \S+ UTC\)", printed)
