"""Who may call what: one role x route matrix, enforced by one dependency (`Principal`).

A route missing from the matrix is refused to everyone (deny by default); a test checks that
every route is listed and docs/access.md shows this table as `matrix_markdown()` renders it.
Separation of duties is not only here: the store refuses a decision by the incident's declarer
and a second role for one subject, and the workflow records every refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from continuity.models import Role

_READERS = frozenset({Role.DUTY_OFFICER, Role.OPERATOR, Role.ENGINEER, Role.AUDITOR})

# Route name (the handler's name) -> the roles that may call it.
MATRIX: Mapping[str, frozenset[Role]] = {
    "declare_incident": frozenset({Role.DUTY_OFFICER}),
    "stand_down": frozenset({Role.DUTY_OFFICER}),
    "abort": frozenset({Role.DUTY_OFFICER}),
    "write_off_device": frozenset({Role.DUTY_OFFICER}),
    "decide_change": frozenset({Role.OPERATOR}),
    "list_incidents": _READERS,
    "read_incident": _READERS,
    "list_changes": _READERS,
    "incident_report": _READERS,
    "export_history": frozenset({Role.AUDITOR}),  # the whole record, inputs included
    "list_areas": _READERS,
    "list_segments": _READERS,
    "list_circuits": _READERS,
    "read_circuit": _READERS,
    # A dry run: what a declaration would send (engineers review it, duty officers see it
    # before they declare).
    "plan_playbook": frozenset({Role.ENGINEER, Role.DUTY_OFFICER}),
    "period": frozenset({Role.AUDITOR}),  # the report upward, from the archived bundles
    "read_me": frozenset(Role),  # every principal may ask who it is
    # The doctor's checks (device and credential names in the details): not for the public.
    "read_checks": frozenset(Role),
}

# Routes that take no bearer token: each checks its caller another way, or serves nothing
# that needs one.
PUBLIC: Mapping[str, str] = {
    "health": "no token: says only whether Temporal and the database answer",
    "display": "no token: only the time zone the console shows times in",
    "voice_status": "Twilio's signature (RequestValidator) and the attempt's nonce",
    "voice_gather": "Twilio's signature (RequestValidator) and the attempt's nonce",
    "sms_status": "Twilio's signature (RequestValidator) and the message's nonce",
    "swagger_ui": "no token: Swagger UI's page, which reads the schema /openapi.json serves to all",
    "swagger_ui_oauth2_redirect": "no token: Swagger UI's OAuth2 redirect page, a static script",
    # Prometheus scrapers usually carry no bearer token; api.metrics keeps every label to a
    # closed vocabulary so that nothing it serves needs one.
    "metrics": "no token: counts only; no names, ids or free text (for Prometheus scrapers)",
}


def allowed(route_name: str) -> frozenset[Role]:
    return MATRIX.get(route_name, frozenset())


def api_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, route name) of every API route of `app`, in its order."""
    found: list[tuple[str, str, str]] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods or ()):
                    found.append((method, route.path, route.name))
            elif hasattr(route, "original_router"):  # an included router
                walk(route.original_router.routes)

    walk(list(app.routes))
    return found


def matrix_markdown(routes: list[tuple[str, str, str]]) -> str:
    """The matrix as a Markdown table, for (method, path, route name) in the app's order."""
    roles = list(Role)
    lines = [
        "| Route | " + " | ".join(r.value for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    public = []
    for method, path, name in routes:
        if name in PUBLIC:
            public.append(f"- `{method} {path}`: {PUBLIC[name]}")
            continue
        cells = ["yes" if r in allowed(name) else "—" for r in roles]
        lines.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    lines += ["", "Without a bearer token:", "", *public]
    return "\n".join(lines) + "\n"


__all__ = ["MATRIX", "PUBLIC", "allowed", "api_routes", "matrix_markdown"]
