"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)]


def test_readme_shows_demo_and_test_commands():
    demo, tests = _commands()[:2]
    assert demo.endswith("continuity demo") and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests and ".[test]" in tests


def test_ci_runs_exactly_the_readme_test_command():
    tests = _commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()
