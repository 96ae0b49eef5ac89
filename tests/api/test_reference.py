"""docs/api.md is the API as its OpenAPI schema describes it, route for route."""

from __future__ import annotations

import re
from pathlib import Path

from api.access import PUBLIC, api_routes
from api.app import create_app
from api.reference import current_reference, reference_markdown
from continuity.settings import Settings

DOC = Path(__file__).parent.parent.parent / "docs" / "api.md"


def test_reference_docs_api_md_is_what_the_code_renders():
    assert DOC.read_text(encoding="utf-8") == current_reference(), (
        "docs/api.md is stale: run `python -m api.reference > docs/api.md`"
    )


def test_reference_every_route_with_who_may_call_it_and_every_link_resolves():
    app = create_app(Settings())
    routes = api_routes(app)
    text = reference_markdown(app.openapi(), routes)
    documented = set(re.findall(r"^### `(\w+) (\S+)`$", text, flags=re.MULTILINE))
    # Out of the schema by design: Prometheus's page, and the docs pages themselves.
    unlisted = {"metrics", "swagger_ui", "swagger_ui_oauth2_redirect"}
    served = {(m, p) for m, p, name in routes if name not in unlisted}
    assert served <= documented, served - documented
    for method, path, name in routes:
        if (method, path) not in documented:
            continue
        section = text.split(f"### `{method} {path}`", 1)[1].split("\n### ", 1)[0]
        who = re.search(r"^Who: (.+)$", section, flags=re.MULTILINE)
        assert who, (method, path)
        if name in PUBLIC:
            assert PUBLIC[name] in who.group(1)
        else:
            assert "bearer token" in who.group(1) and "nobody" not in who.group(1), name
    anchors = {
        "#" + re.sub(r"[^a-z0-9-]", "", h.lower())
        for h in re.findall(r"^### (\w+)$", text, flags=re.MULTILINE)
    }
    links = set(re.findall(r"\]\((#[a-z0-9-]+)\)", text))
    assert links and links <= anchors, links - anchors


def test_reference_request_limits_shown_as_the_api_enforces_them():
    text = current_reference()
    create = text.split("### IncidentCreate\n", 1)[1].split("\n### ", 1)[0]
    assert "| `area` | string | yes | min length 1; max length 64;" in create
    assert '| `description` | string | no | max length 2000; default `""` |' in create
    assert "Any other field is refused (422)." in create
    created = text.split("### IncidentCreated\n", 1)[1].split("\n### ", 1)[0]
    assert "refused" not in created  # an answer's shape, not a request's
