"""The shipped playbooks and their catalogue, by stable registered name, with every version.

The module of each playbook builds its current version. Every version ever shipped is also
kept frozen as JSON under `playbooks/versions/<name>/v<N>.json`: an old version stays loadable
by name and number (`get_playbook(name, version)`, `continuity playbook show NAME --version N`)
after the module moved on, and a test refuses a module whose spec changed without a new
version number (`continuity playbook freeze NAME` writes the new version's file).
"""

import json
from collections.abc import Callable
from pathlib import Path

from continuity.errors import PlaybookError
from continuity.playbook import PlaybookSpec, parse_spec
from playbooks import kon_tum_2a, sabotage_cable_cut

CATALOGUE: dict[str, Callable[[], PlaybookSpec]] = {
    kon_tum_2a.NAME: kon_tum_2a.build,
    sabotage_cable_cut.NAME: sabotage_cable_cut.build,
}
DEFAULT_PLAYBOOK = kon_tum_2a.NAME
VERSIONS_DIR = Path(__file__).parent / "versions"


def frozen_path(name: str, version: int) -> Path:
    return VERSIONS_DIR / name / f"v{version}.json"


def versions(name: str) -> list[int]:
    """Every version of `name` kept frozen, oldest first."""
    folder = VERSIONS_DIR / name
    found = {int(p.stem[1:]) for p in folder.glob("v*.json") if p.stem[1:].isdigit()}
    return sorted(found)


def get_playbook(name: str, version: int | None = None) -> PlaybookSpec:
    """The current version of a shipped playbook, or the frozen `version` of it."""
    try:
        build = CATALOGUE[name]
    except KeyError:
        raise PlaybookError(
            f"unknown playbook {name!r}; known: {', '.join(sorted(CATALOGUE))}"
        ) from None
    current = build()
    if version is None or version == current.version:
        return current
    path = frozen_path(name, version)
    if not path.exists():
        kept = ", ".join(f"v{v}" for v in versions(name)) or "none"
        raise PlaybookError(f"playbook {name} has no version {version}; kept: {kept}")
    return parse_spec(json.loads(path.read_text(encoding="utf-8")))


def freeze(name: str) -> Path:
    """Keep the current version of `name` as JSON; refuse to overwrite a different one."""
    spec = get_playbook(name)
    path = frozen_path(name, spec.version)
    text = json.dumps(spec.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    if path.exists():
        kept = parse_spec(json.loads(path.read_text(encoding="utf-8")))
        if kept.sha256() != spec.sha256():
            raise PlaybookError(
                f"{path} keeps another v{spec.version} of {name}: bump `version` in its module"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = [
    "CATALOGUE",
    "DEFAULT_PLAYBOOK",
    "freeze",
    "frozen_path",
    "get_playbook",
    "versions",
]
