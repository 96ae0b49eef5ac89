"""The shipped playbooks are valid specs with stable hashes; invalid specs are refused."""

from __future__ import annotations

import pytest

from continuity.errors import PlaybookError
from continuity.playbook import parse_spec
from playbooks import CATALOGUE, get_playbook


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_shipped_playbook_builds_with_stable_hash(name: str):
    a, b = get_playbook(name), get_playbook(name)
    assert a.name == name
    assert a.sha256() == b.sha256()
    assert len(a.sha256()) == 64


def test_kon_tum_2a_selects_all_priority_classes_before_rerouting_highest_first():
    spec = get_playbook("kon-tum-2a")
    kinds = [s.type for s in spec.steps]
    assert kinds.index("select_circuits") < kinds.index("reroute_wave")
    waves = [s for s in spec.steps if s.type == "reroute_wave"]
    assert waves[0].restoration_levels == [1, 2]
    assert {c.value for c in spec.steps[0].priority_classes} == {"armed_forces", "party", "state"}


def test_playbook_edit_changes_hash():
    spec = get_playbook("kon-tum-2a")
    edited = spec.model_copy(update={"version": spec.version + 1})
    assert edited.sha256() != spec.sha256()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "name": "p",
                "version": 1,
                "title": "t",
                "incident_kinds": ["riot"],
                "steps": [{"type": "reroute_wave", "name": "w", "restoration_levels": [1]}],
            },
            "select_circuits step before",
        ),
        (
            {
                "name": "p",
                "version": 1,
                "title": "t",
                "incident_kinds": ["riot"],
                "steps": [
                    {"type": "select_circuits", "priority_classes": ["armed_forces"]},
                    {"type": "reroute_wave", "name": "w", "restoration_levels": [7]},
                ],
            },
            "restoration levels",
        ),
        (
            {
                "name": "p",
                "version": 1,
                "title": "t",
                "incident_kinds": ["riot"],
                "steps": [{"type": "format_disk"}],
            },
            "format_disk",
        ),
        (
            {
                "name": "p; rm",
                "version": 1,
                "title": "t",
                "incident_kinds": ["riot"],
                "steps": [{"type": "report"}],
            },
            "name",
        ),
    ],
)
def test_invalid_playbook_refused_with_clear_error(data, message):
    with pytest.raises(PlaybookError, match=message):
        parse_spec(data)


def test_unknown_playbook_name_refused():
    with pytest.raises(PlaybookError, match="unknown playbook"):
        get_playbook("no-such")
