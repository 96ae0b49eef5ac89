"""The shipped playbooks and their catalogue, by stable registered name."""

from collections.abc import Callable

from continuity.errors import PlaybookError
from continuity.playbook import PlaybookSpec
from playbooks import kon_tum_2a, sabotage_cable_cut

CATALOGUE: dict[str, Callable[[], PlaybookSpec]] = {
    kon_tum_2a.NAME: kon_tum_2a.build,
    sabotage_cable_cut.NAME: sabotage_cable_cut.build,
}
DEFAULT_PLAYBOOK = kon_tum_2a.NAME


def get_playbook(name: str) -> PlaybookSpec:
    try:
        return CATALOGUE[name]()
    except KeyError:
        raise PlaybookError(
            f"unknown playbook {name!r}; known: {', '.join(sorted(CATALOGUE))}"
        ) from None


__all__ = ["CATALOGUE", "DEFAULT_PLAYBOOK", "get_playbook"]
