"""The frozen legacy workflows must not lean on modules the incident-core rewrite changes."""

from __future__ import annotations

import ast
from pathlib import Path

import workflows.legacy

LEGACY_DIR = Path(workflows.legacy.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_legacy_workflows_import_only_frozen_project_code():
    leaks = {
        f"{path.name}: {mod}"
        for path in sorted(LEGACY_DIR.glob("*.py"))
        for mod in _imported_modules(path)
        if mod.split(".")[0] in {"continuity", "activities", "app", "api"}
        or (mod.startswith("workflows") and not mod.startswith("workflows.legacy"))
    }
    assert not leaks


def test_legacy_workflows_keep_their_registered_names():
    from workflows.legacy import LEGACY_WORKFLOWS

    names = [w.__temporal_workflow_definition.name for w in LEGACY_WORKFLOWS]  # type: ignore[attr-defined]
    assert names == ["Playbook", "DeviceChange"]
