"""Playbook versions: every version shipped stays loadable, and no playbook changes without a
new version number (an incident's record names the version it ran)."""

from __future__ import annotations

import json

import pytest

from continuity.errors import PlaybookError
from playbooks import CATALOGUE, freeze, frozen_path, get_playbook, versions

# What recorded histories ran (tests/histories, tests/bundles): their spec's hash.
RECORDED = {("kon-tum-2a", 1): "d8004d2466df67e2ff62399ddc5a66e787441736607581b16e7bcfb90bf759b6"}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_the_current_version_is_kept_and_unchanged_since(name: str) -> None:
    spec = CATALOGUE[name]()
    path = frozen_path(name, spec.version)
    assert path.exists(), f"run `continuity playbook freeze {name}`"
    kept = get_playbook(name, spec.version)
    assert kept.sha256() == spec.sha256(), (
        f"{name} v{spec.version} changed since it was kept: bump its version, then freeze it"
    )
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == spec.version


def test_every_kept_version_loads_and_recorded_ones_hash_as_recorded() -> None:
    for name in CATALOGUE:
        for v in versions(name):
            spec = get_playbook(name, v)
            assert spec.version == v and spec.name == name
    for (name, v), digest in RECORDED.items():
        assert get_playbook(name, v).sha256() == digest


def test_an_unknown_version_is_a_clear_error_and_freeze_never_overwrites(tmp_path, monkeypatch):
    with pytest.raises(PlaybookError, match="has no version 99; kept: v1, v2"):
        get_playbook("kon-tum-2a", 99)
    import playbooks

    monkeypatch.setattr(playbooks, "VERSIONS_DIR", tmp_path)
    path = freeze("kon-tum-2a")
    current = get_playbook("kon-tum-2a").version
    assert path == tmp_path / "kon-tum-2a" / f"v{current}.json" and freeze("kon-tum-2a") == path
    doc = json.loads(path.read_text())
    doc["title"] = "edited by hand"
    path.write_text(json.dumps(doc))
    with pytest.raises(PlaybookError, match="bump `version`"):
        freeze("kon-tum-2a")
