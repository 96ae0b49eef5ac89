"""The one way to reach Temporal: every client uses the pydantic data converter."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from continuity.settings import Settings


async def connect_temporal(
    settings: Settings | None = None, *, address: str | None = None, namespace: str | None = None
) -> Client:
    """A client for `address` (default: the settings' frontend) with our data converter."""
    s = settings or Settings()
    return await Client.connect(
        address or s.temporal_address,
        namespace=namespace or s.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


__all__ = ["connect_temporal"]
