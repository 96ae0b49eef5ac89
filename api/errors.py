"""API errors and the one handler that maps them and domain errors to HTTP status codes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from continuity.errors import (
    AlreadyDecided,
    ChangeNotPending,
    ContinuityError,
    NotAConfirmer,
    PlaybookError,
    SelfDecision,
    StaleChange,
    StorageError,
    UnknownChange,
    UnknownOperator,
    ValidationFailed,
    WindowClosed,
)
from continuity.incidents import TimingsUnfit

# How long an operator should wait before sending again when the workflow engine is overloaded.
RETRY_AFTER_S = 2


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, *, type: str | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.message = message
        self.type = type or type_name(self)


def type_name(e: Exception) -> str:
    return type(e).__name__


class Unauthenticated(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Unprocessable(ApiError):
    status = 422


class Unavailable(ApiError):
    """The workflow engine or the database cannot take this now: try again (Retry-After)."""

    status = 503


class ErrorBody(BaseModel):
    """Every error response: what went wrong, by name, and why."""

    error: str  # e.g. UnknownChange, AlreadyDecided, WindowClosed, ValidationFailed
    detail: str | list[dict[str, Any]]  # a sentence, or a 422's list of field errors


_MEANING = {
    400: "the callback URL is not one we issued",
    401: "no token, or an unknown, expired or revoked one (WWW-Authenticate: Bearer)",
    403: "the role may not do this, or the decision is not this principal's to make",
    404: "no such incident, change or circuit",
    409: "conflicts with the state it is in (already declared, decided, ended, window closed)",
    422: "the request is malformed; nothing was changed",
    503: "the workflow engine or the database cannot take it now; send again after Retry-After",
}


def ok_as(media_type: str, description: str, kind: str = "string") -> dict[int | str, Any]:
    """OpenAPI `responses` for a 200 that is not a JSON model (Markdown, TwiML, a history)."""
    return {200: {"description": description, "content": {media_type: {"schema": {"type": kind}}}}}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer, with their body."""
    return {s: {"model": ErrorBody, "description": _MEANING[s]} for s in statuses}


# First match wins: subclasses before their bases.
_DOMAIN_STATUS: list[tuple[type[ContinuityError], int]] = [
    (UnknownOperator, 403),
    (UnknownChange, 404),
    (SelfDecision, 403),
    (NotAConfirmer, 403),
    (ChangeNotPending, 409),
    (WindowClosed, 409),
    (AlreadyDecided, 409),
    (StaleChange, 409),
    (TimingsUnfit, 503),  # a configuration fault, not the duty officer's
    (ValidationFailed, 422),
    (PlaybookError, 422),
    (StorageError, 503),
]


def _retry_after(status: int) -> dict[str, str] | None:
    return {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else _retry_after(e.status)
        return JSONResponse(
            {"error": e.type, "detail": e.message}, status_code=e.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "ValidationFailed", "detail": _jsonable(e.errors())}, status_code=422
        )

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, e: ValidationError) -> JSONResponse:
        return JSONResponse(
            {
                "error": "ValidationFailed",
                "detail": e.errors(include_url=False, include_context=False),
            },
            status_code=422,
        )

    @app.exception_handler(ContinuityError)
    async def _domain_error(_: Request, e: ContinuityError) -> JSONResponse:
        status = next((s for cls, s in _DOMAIN_STATUS if isinstance(e, cls)), 500)
        return JSONResponse(
            {"error": e.type, "detail": e.message},
            status_code=status,
            headers=_retry_after(status),
        )


def _jsonable(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's error list without its `ctx` (it may hold the exception object itself)."""
    keep = ("type", "loc", "msg", "input")
    return jsonable_encoder([{k: v for k, v in dict(e).items() if k in keep} for e in errors])
