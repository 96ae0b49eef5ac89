"""`continuity api` for the bench, in its own process, with the bench playbook in the catalogue.

    CONTINUITY_...=... python bench/continuity_api.py

The same as `python -m app.cli api` (uvicorn.run(create_app(Settings()), ...), settings from
CONTINUITY_* variables), with two differences: PLAYBOOK is registered in the catalogue the
declaration route reads, so the bench declares through the real POST /incidents; and uvicorn
logs warnings only (no access line per request: the operator client sends thousands).
"""

from __future__ import annotations

import uvicorn

from api.app import create_app
from continuity.models import IncidentKind, PriorityClass
from continuity.playbook import PlaybookSpec, RerouteWave, SelectCircuits
from continuity.runtime import freeze_startup_heap
from continuity.settings import Settings
from playbooks import CATALOGUE

PLAYBOOK = "bench-fanout"


def bench_playbook() -> PlaybookSpec:
    """Every circuit of the incident's area in one wave, each change confirmed; no phone calls.

    For the bench only: the time to restore is then the devices' and the orchestrator's, not a
    duty officer's phone ringing. Stand-down restores everything.
    """
    return PlaybookSpec(
        name=PLAYBOOK,
        version=1,
        title="Bench: every circuit of the area to backup in one wave, no calls",
        incident_kinds=[IncidentKind.SABOTAGE],
        steps=[
            SelectCircuits(priority_classes=list(PriorityClass), max_restoration_level=5),
            RerouteWave(name="all circuits", restoration_levels=[1, 2, 3, 4, 5]),
        ],
    )


def main() -> None:
    # The catalogue is the public registry the API reads; this process exists for the bench only.
    CATALOGUE[PLAYBOOK] = bench_playbook
    settings = Settings()
    app = create_app(settings)
    freeze_startup_heap()  # as `continuity api` does
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning")


if __name__ == "__main__":
    main()
