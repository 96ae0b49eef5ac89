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


@pytest.mark.parametrize("path", HISTORIES, ids=[h.stem for h in HISTORIES])
async def test_recorded_history_renders_its_reports_offline(path: Path):
    """An auditor renders the dossier of any recorded incident from its history alone; a
    history of the workflows before the incident core gets a clear refusal, not a crash."""
    from app.bundle import lines_not_rendered
    from continuity.errors import ValidationFailed
    from workflows.history_facts import history_facts

    history = load_history(path)
    workflow_type = history.events[0].workflow_execution_started_event_attributes.workflow_type
    if workflow_type.name != "Incident":
        with pytest.raises(ValidationFailed, match="not an incident's"):
            await history_facts(history)
        return
    facts = await history_facts(history)
    assert facts.at_reports, "the recording ends after its reports were written"
    # Every line it sent is one its recorded playbook and inventory snapshot render.
    checked, problems = lines_not_rendered(history)
    assert checked > 0 and not problems, problems
    for lang, heading in [("vi", "Hồ sơ gửi Công an"), ("en", "Dossier for police")]:
        text = facts.render("dossier_2c", lang)
        assert text.startswith(f"# {heading}") and facts.input.incident.id in text
        assert facts.matches(text, "dossier_2c", lang)


BUNDLES = sorted(p for p in (Path(__file__).parent.parent / "bundles").iterdir() if p.is_dir())


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
async def test_recorded_bundle_verifies_offline(bundle: Path):
    """A demo's signed bundle, recorded: it verifies with this code (every signature, hash,
    replay, transcript, re-rendered command and stored report), now and after any change."""
    from app.bundle import verify_bundle
    from continuity.signing import load_public_key

    report = await verify_bundle(bundle, [load_public_key(bundle.with_suffix(".pub"))])
    assert report.ok, report.problems
    assert report.attestations >= 5 and report.reports == 4 and report.rendered > 0
    # Recorded with a playbook version the catalogue has since moved past, and kept.
    from playbooks import get_playbook
    from workflows.history_facts import history_facts

    history = load_history(bundle / "histories" / f"{bundle.name}.json")
    ran = (await history_facts(history)).input.playbook
    assert ran.version < get_playbook(ran.name).version
    assert get_playbook(ran.name, ran.version).sha256() == ran.sha256()
