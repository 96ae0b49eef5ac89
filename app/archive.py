"""Record keeping beyond Temporal's retention: every closed incident's signed bundle, on disk.

The central worker sweeps the store every `archive_interval_s`: each incident whose reports are
written (its run's last act) and that has no bundle in `archive_dir` yet gets one, written
into a hidden directory and renamed into place, so a crash never leaves half a bundle under an
incident's name. A bundle is never rewritten.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client

from app.bundle import make_bundle
from continuity.bundles import MANIFEST
from continuity.checks import retention_days, retention_problem
from continuity.errors import ConfigurationError, ValidationFailed
from continuity.settings import Settings
from continuity.store import Store

log = logging.getLogger("continuity.archive")


class Archive:
    def __init__(self, client: Client, store: Store, directory: Path, key: Ed25519PrivateKey):
        self.client = client
        self.store = store
        self.directory = directory
        self.key = key
        self._told: set[str] = set()  # incidents whose bundle cannot be made: logged once

    async def sweep(self) -> list[str]:
        """Bundle every closed incident not archived yet; the ids archived now."""
        done = []
        for incident_id in await asyncio.to_thread(self.store.reported_incidents):
            target = self.directory / incident_id
            if await asyncio.to_thread((target / MANIFEST).exists):
                continue
            partial = self.directory / f".{incident_id}.partial"
            await asyncio.to_thread(shutil.rmtree, partial, True)
            try:
                await make_bundle(self.client, self.store, incident_id, partial, self.key)
            except ValidationFailed as e:  # still running (a report on demand), or gone
                if "still running" not in str(e) and incident_id not in self._told:
                    self._told.add(incident_id)
                    log.warning("archive: no bundle for %s: %s", incident_id, e)
                continue
            await asyncio.to_thread(os.replace, partial, target)
            log.info("archive: %s bundled into %s", incident_id, target)
            done.append(incident_id)
        return done

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - a store or Temporal outage: try again later
                log.exception("archive: sweep failed; next try in %.0f s", interval_s)
            await asyncio.sleep(interval_s)


async def start_archive(client: Client, store: Store, settings: Settings) -> Archive | None:
    """The worker's start-up check of record keeping, and its archive if one is configured."""
    problem = retention_problem(settings, await retention_days(client, settings.temporal_namespace))
    if problem and settings.production:
        raise ConfigurationError(problem)
    if problem:
        log.warning("%s: incidents older than that will not be verifiable", problem)
    if settings.archive_dir is None:
        return None
    from continuity.signing import load_private_key

    if not settings.signing_key_path.exists():
        raise ConfigurationError(
            f"CONTINUITY_ARCHIVE_DIR is set but there is no signing key at "
            f"{settings.signing_key_path}: run `continuity keys generate`"
        )
    key = await asyncio.to_thread(load_private_key, settings.signing_key_path)
    await asyncio.to_thread(settings.archive_dir.mkdir, parents=True, exist_ok=True)
    return Archive(client, store, settings.archive_dir, key)


__all__ = ["Archive", "start_archive"]
