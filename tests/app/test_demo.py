"""`continuity demo` end to end: the stored dossier is written when its facts are final."""

from __future__ import annotations

import json
from pathlib import Path

from app.audit import load_history, replay
from app.demo import run_demo
from continuity.store import Store


async def test_demo_stored_dossier_names_the_officer_who_pressed_1(tmp_path: Path):
    lines: list[str] = []
    assert await run_demo(tmp_path, echo=lines.append) == 0, "\n".join(lines)

    (history,) = (tmp_path / "histories").glob("INC-*.json")
    incident = history.stem
    store = Store(f"sqlite:///{tmp_path / 'continuity.db'}")
    try:
        dossiers = [r for r in store.reports(incident) if r.form == "dossier_2c"]
        calls = store.calls(incident)
    finally:
        store.close()
    assert len(dossiers) == 1  # written once, at close
    acked = [c for c in calls if c.digits == "1"]
    assert acked, [(c.officer_id, c.status) for c in calls]
    text = dossiers[0].text
    assert f"Acknowledged by: {acked[0].officer_id}" in text
    assert "| no | " in text and "| yes | " in text  # the missed call and the answered one
    # The saved histories replay offline, the duty calls' too.
    histories = sorted((tmp_path / "histories").rglob("*.json"))
    assert len(histories) >= 2
    for h in histories:
        outcome = await replay(load_history(h))
        assert outcome.ok, (h.name, outcome.failure)
    assert json.loads((tmp_path / "histories" / f"{incident}.meta").read_text())["workflow_id"]
