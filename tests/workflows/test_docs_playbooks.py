"""docs/playbooks.md's worked example, run: written, validated, planned and tested on the lab."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.cli import run
from app.stack import Stack
from app.testing import PlaybookLab
from continuity.errors import PlaybookError
from continuity.models import IncidentKind
from continuity.plan import plan_incident
from continuity.playbook import load_spec_file
from tests.conftest import TEST_TIMINGS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "playbooks.md").read_text(encoding="utf-8")


def _block(lang: str) -> str:
    (body,) = re.findall(rf"```{lang}\n(.*?)\n```", DOC, flags=re.S)
    return body


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "armed-forces-first.json"
    path.write_text(_block("json"), encoding="utf-8")
    return path


def test_the_example_validates_and_a_broken_one_names_step_and_field(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert run(["playbook", "validate", str(spec_file)]) == 0
    assert "valid playbook armed-forces-first v1" in capsys.readouterr().out
    broken = json.loads(spec_file.read_text())
    broken["steps"][1]["restoration_levels"] = []
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(PlaybookError, match=r"step 2 \(reroute_wave\), field restoration_levels"):
        load_spec_file(bad)


async def test_the_example_plans_and_runs_on_the_lab(stack: Stack, spec_file: Path):
    spec = load_spec_file(spec_file)
    plan = plan_incident(
        spec,
        stack.store.inventory(),
        area="ngoc-hoi",
        kind=IncidentKind.SABOTAGE,
        timings=TEST_TIMINGS,
    )
    assert plan.circuits == ["bgc-ngoc-hoi-post", "police-ngoc-hoi"]
    assert [c.device for c in plan.changes] == ["nh-agg-01"]
    assert any(ln.startswith("ip route-static 10.62.9.0 24") for ln in plan.changes[0].reroute)

    namespace: dict[str, object] = {}
    exec(compile(_block("python"), "docs/playbooks.md", "exec"), namespace)  # noqa: S102
    test = namespace["test_armed_forces_first"]
    await test(PlaybookLab(stack, timings=TEST_TIMINGS), spec_file)  # type: ignore[operator]
