"""Recorded histories in tests/histories/ must replay against the current workflow code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.audit import load_history, replay

HISTORIES = sorted((Path(__file__).parent.parent / "histories").rglob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[h.stem for h in HISTORIES])
async def test_recorded_history_replays_without_divergence(path: Path):
    outcome = await replay(load_history(path))
    assert outcome.ok, outcome.failure


def test_recorded_histories_exist():
    assert HISTORIES, "record one with `continuity demo` and copy it to tests/histories/"


async def test_tampered_history_replay_reports_divergence(tmp_path: Path):
    source = HISTORIES[0]
    data = json.loads(source.read_text(encoding="utf-8"))
    tampered = 0
    for event in data["events"]:
        attrs = event.get("activityTaskScheduledEventAttributes")
        if attrs and attrs["activityType"]["name"] == "write_report":
            attrs["activityType"]["name"] = "erase_evidence"
            tampered += 1
    assert tampered
    forged = tmp_path / source.name
    forged.write_text(json.dumps(data), encoding="utf-8")
    outcome = await replay(load_history(forged))
    assert not outcome.ok
    assert "erase_evidence" in (outcome.failure or "") or "Nondeterminism" in (
        outcome.failure or ""
    )
