"""Schemathesis over the live API, with a token per role: no server error, and every response
(status, content type, body) is one the OpenAPI document promises.

The API under test is a real one (uvicorn, the real store, the Temporal dev server) of its own:
its task queue has no worker, so a declaration that gets through starts a workflow that never
touches a device; each is terminated at the end.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis

# Imported here, before the live API's thread starts, not lazily inside from_url(): pytest
# rewrites these modules' asserts with ast, and CPython 3.11's AST constructor is not safe
# against another thread compiling at the same moment ("AST constructor recursion depth
# mismatch", cpython#106905), which a fresh checkout's first imports in the API thread do.
import schemathesis.specs.openapi.schemas  # noqa: F401
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from app.stack import SAMPLE_INVENTORY
from continuity.models import Inventory, Role
from continuity.settings import Settings
from continuity.store import Store

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class LiveApi:
    def __init__(self, data_dir: Path, temporal_address: str) -> None:
        self.task_queue = f"schemathesis-nobody-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            data_dir=data_dir, temporal_address=temporal_address, task_queue=self.task_queue
        )
        store = Store(self.settings.sqlalchemy_url)
        store.create_schema()
        store.replace_inventory(
            Inventory.model_validate_json(SAMPLE_INVENTORY.read_text(encoding="utf-8"))
        )
        self.tokens = {
            role: store.create_token(subject=f"st-{role.value}", role=role)[1] for role in Role
        }
        store.close()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._sock = sock
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(self.settings), log_level="warning")
        )
        # Its own thread and event loop: schemathesis calls it synchronously.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def __enter__(self) -> LiveApi:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


@pytest.fixture(scope="module")
def live_api(
    tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment
) -> Iterator[LiveApi]:
    address = temporal_env.client.service_client.config.target_host
    with LiveApi(tmp_path_factory.mktemp("schema"), address) as api:
        yield api
        asyncio.run(_terminate_started(address, api.task_queue))


async def _terminate_started(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    async for wf in client.list_workflows(f"TaskQueue = '{task_queue}'"):
        if wf.status is WorkflowExecutionStatus.RUNNING:
            await client.get_workflow_handle(wf.id).terminate("schemathesis run done")


def test_every_route_answers_as_documented_for_every_role(live_api: LiveApi):
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same requests every run: a failure is reproducible
            database=None,
        )
        def answers_as_documented(case: schemathesis.Case) -> None:
            for role in Role:
                case.call_and_validate(
                    base_url=live_api.url,
                    headers={"Authorization": f"Bearer {live_api.tokens[role]}"},
                    checks=CHECKS,
                )
            case.call_and_validate(base_url=live_api.url, checks=CHECKS)  # no token

        try:
            answers_as_documented()
        except Exception as e:  # noqa: BLE001 - collect every operation's failure, then report
            failures.append(f"{operation.label}: {e}")
    assert not failures, "\n\n".join(failures)
