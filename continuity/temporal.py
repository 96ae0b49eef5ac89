"""The one way to reach Temporal: the pydantic data converter always, mutual TLS when configured."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import temporalio.api.common.v1
import temporalio.api.history.v1
from pydantic_core import to_json
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.service import TLSConfig

from continuity.errors import ConfigurationError, TemporalUnavailable, ValidationFailed
from continuity.models import COMPACT
from continuity.settings import Settings

if TYPE_CHECKING:
    from continuity.messages import IncidentInput, StatusPage
    from continuity.models import IncidentStatus


class _CompactJSONPayloadConverter(PydanticJSONPlainPayloadConverter):
    """The pydantic JSON converter, serialising our models without their default values
    (continuity.models.Compact); decoding is the pydantic converter's, so payloads recorded
    before, with every field, decode the same."""

    def to_payload(self, value: Any) -> temporalio.api.common.v1.Payload | None:
        return temporalio.api.common.v1.Payload(
            metadata={"encoding": self.encoding.encode()},
            data=to_json(value, context={COMPACT: True}),
        )


class _PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            *(
                _CompactJSONPayloadConverter() if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


# Every client, worker and replayer of ours uses this converter.
data_converter = DataConverter(payload_converter_class=_PayloadConverter)

_TLS_FILES = ("temporal_tls_ca", "temporal_tls_cert", "temporal_tls_key")


def incident_input(
    first: temporalio.api.history.v1.HistoryEvent, workflow_id: str
) -> IncidentInput:
    """The IncidentInput of an incident's history, from its first event (the declaration, the
    playbook, the inventory snapshot and the attesting keys all travel in it)."""
    from continuity.messages import IncidentInput

    if not first.HasField("workflow_execution_started_event_attributes"):
        raise ValidationFailed(f"{workflow_id}: the history does not start with its start event")
    attrs = first.workflow_execution_started_event_attributes
    if attrs.workflow_type.name != "Incident":
        raise ValidationFailed(
            f"{workflow_id}: a {attrs.workflow_type.name} history, not an incident's "
            "(reports are rendered from an incident's own history)"
        )
    [inp] = data_converter.payload_converter.from_payloads(
        list(attrs.input.payloads), [IncidentInput]
    )
    return cast("IncidentInput", inp)


async def incident_input_of(handle: WorkflowHandle[Any, Any]) -> IncidentInput:
    """A running or closed incident's input, read from its history's first event only."""
    async for event in handle.fetch_history_events(page_size=1):
        return incident_input(event, handle.id)
    raise ValidationFailed(f"{handle.id}: its history has no events")


async def connect_temporal(
    settings: Settings | None = None, *, address: str | None = None, namespace: str | None = None
) -> Client:
    """A client for `address` (default: the settings' frontend) with our data converter.

    Raises ConfigurationError before connecting if the settings' TLS cannot be used.
    """
    s = settings or Settings()
    tls = temporal_tls_config(s)
    target = address or s.temporal_address
    try:
        return await Client.connect(
            target,
            namespace=namespace or s.temporal_namespace,
            data_converter=data_converter,
            tls=tls or False,
        )
    except RuntimeError as e:  # the SDK's core says "Failed client connect: …"
        if "connect" not in str(e).lower():
            raise
        raise TemporalUnavailable(
            f"cannot reach Temporal at {target} (CONTINUITY_TEMPORAL_ADDRESS): {_reason(str(e))}"
        ) from None


# A page: 500 changes (~0.55 MB) and 1,500 of each lighter list (~0.6 MB), half the limit.
STATUS_PAGE_SIZE = 500
LIGHT_LISTS_WIDER = 3
_PAGED_KEPT = 256  # incidents remembered as read in pages; the oldest go first


def _too_large(e: WorkflowQueryFailedError) -> bool:
    # The server's words for a query answer past `limit.blobSize.error` (2 MB by default).
    return "size exceeds" in str(e)


class StatusReader:
    """An incident's status at any size: one `status` query while it fits in Temporal's
    payload limit (2 MB by default, about a thousand devices); past it, `status_page` queries
    of `page_size` items of each list, read side by side and put together, with half as many
    a page whenever one page is still too large. An incident once read in pages is read in
    pages from then on (the whole would be built and refused at every reading)."""

    def __init__(self, page_size: int = STATUS_PAGE_SIZE) -> None:
        self.page_size = page_size
        self._paged: dict[str, int] = {}  # workflow id -> the page size that fitted

    async def read(self, handle: WorkflowHandle[Any, Any]) -> IncidentStatus:
        """Raises WorkflowQueryFailedError for anything but the size (and when even a page of
        one item of each list is too large), and the client's RPCError."""
        from continuity.models import IncidentStatus

        size = self._paged.get(handle.id)
        if size is None:
            try:
                return await handle.query("status", result_type=IncidentStatus)
            except WorkflowQueryFailedError as e:
                if not _too_large(e):
                    raise
            size = self.page_size
        while True:
            try:
                status = await self._pages(handle, size)
            except WorkflowQueryFailedError as e:
                if not _too_large(e) or size == 1:
                    raise
                size = max(1, size // 2)
                continue
            self._paged.pop(handle.id, None)
            self._paged[handle.id] = size
            for old in list(self._paged)[: max(0, len(self._paged) - _PAGED_KEPT)]:
                del self._paged[old]
            return status

    @staticmethod
    async def _pages(handle: WorkflowHandle[Any, Any], size: int) -> IncidentStatus:
        from continuity.messages import STATUS_LISTS, StatusPage, StatusPageRequest

        # A change's record is ~1.1 KB, a circuit's or a timeline entry's ~0.2 KB: the lighter
        # lists go LIGHT_LISTS_WIDER times as many a page (4 pages at a thousand devices).
        request = StatusPageRequest(
            index=0,
            size=size,
            sizes={n: size * LIGHT_LISTS_WIDER for n in STATUS_LISTS if n != "changes"},
        )

        async def page(index: int) -> StatusPage:
            return await handle.query(
                "status_page", request.model_copy(update={"index": index}), result_type=StatusPage
            )

        first = await page(0)
        count = max(
            (math.ceil(total / request.of(n)) for n, total in first.totals.items()), default=0
        )
        rest = await asyncio.gather(*(page(i) for i in range(1, count)))
        lists = {name: list(getattr(first.status, name)) for name in STATUS_LISTS}
        for p in rest:
            for name, items in lists.items():
                items += getattr(p.status, name)
        return first.status.model_copy(update=lists)


def _reason(message: str) -> str:
    """The readable end of the core's transport error."""
    for hint in ("Connection refused", "timed out", "dns error", "certificate", "tls"):
        if hint.lower() in message.lower():
            return hint.lower()
    return message.splitlines()[0][:200]


def temporal_tls_config(settings: Settings) -> TLSConfig | None:
    """The TLS to reach Temporal with; None for plaintext (the embedded dev server).

    Raises ConfigurationError when production lacks any of the CA, certificate and key, when
    only one of certificate and key is set, or when a file cannot be read as PEM.
    """
    paths: dict[str, Path | None] = {name: getattr(settings, name) for name in _TLS_FILES}
    if settings.production:
        missing = [_variable(name) for name, path in paths.items() if path is None]
        if missing:
            raise ConfigurationError(
                "production (CONTINUITY_PRODUCTION) reaches Temporal only over mutual TLS; "
                f"set {', '.join(missing)} (deploy/make-certs.sh makes the files)"
            )
    if settings.temporal_tls_server_name is None and all(p is None for p in paths.values()):
        return None
    if (paths["temporal_tls_cert"] is None) != (paths["temporal_tls_key"] is None):
        raise ConfigurationError(
            f"{_variable('temporal_tls_cert')} and {_variable('temporal_tls_key')} go together: "
            "set both or neither"
        )
    pem = {name: _read_pem(name, path) if path else None for name, path in paths.items()}
    return TLSConfig(
        server_root_ca_cert=pem["temporal_tls_ca"],
        client_cert=pem["temporal_tls_cert"],
        client_private_key=pem["temporal_tls_key"],
        domain=settings.temporal_tls_server_name,
    )


def _variable(field: str) -> str:
    return f"CONTINUITY_{field.upper()}"


def _read_pem(field: str, path: Path) -> bytes:
    # Read here, not in the SDK's core: its failure would be a traceback from deep in a connect.
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigurationError(
            f"{_variable(field)}={path} cannot be read: {e.strerror}"
        ) from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(f"{_variable(field)}={path} is not a PEM file")
    return data


__all__ = ["STATUS_PAGE_SIZE", "StatusReader", "connect_temporal", "temporal_tls_config"]
