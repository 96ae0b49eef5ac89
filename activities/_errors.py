"""Our errors leave activities as ApplicationError(type, non_retryable), what retries read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from temporalio.exceptions import ApplicationError

from continuity.errors import ContinuityError


def application_error(e: ContinuityError, **details: Any) -> ApplicationError:
    """The one translation; `details` (JSON-able) travel with the failure into the history."""
    extra = [details] if details else []
    return ApplicationError(e.message, *extra, type=e.type, non_retryable=not e.retryable)


@contextlib.contextmanager
def as_application_error(**details: Any) -> Iterator[None]:
    try:
        yield
    except ContinuityError as e:
        raise application_error(e, **details) from e


def failure_details(error: BaseException) -> dict[str, Any]:
    """The details an activity attached to its failure (workflow side), or {}."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, ApplicationError) and cause.details:
        first = cause.details[0]
        if isinstance(first, dict):
            return first
    return {}


__all__ = ["application_error", "as_application_error", "failure_details"]
