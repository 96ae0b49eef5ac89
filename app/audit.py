"""Audit: export workflow histories and replay them offline against the current code."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from continuity.errors import ValidationFailed
from continuity.temporal import data_converter


@dataclass(frozen=True)
class ReplayOutcome:
    workflow_id: str
    ok: bool
    failure: str | None


def load_history(path: Path) -> WorkflowHistory:
    """A history in Temporal's JSON format; the workflow id is in a side file or the name."""
    meta = path.with_suffix(".meta")
    workflow_id = path.stem
    try:
        if meta.exists():
            workflow_id = json.loads(meta.read_text(encoding="utf-8")).get(
                "workflow_id", workflow_id
            )
        return WorkflowHistory.from_json(workflow_id, path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValidationFailed(f"{path}: cannot read it: {e.strerror}") from None
    except (ValueError, TypeError, KeyError) as e:  # JSON, or not a history's shape
        raise ValidationFailed(f"{path}: not a Temporal workflow history ({e})") from None


async def replay(history: WorkflowHistory) -> ReplayOutcome:
    from workflows import REPLAY_WORKFLOWS

    # debug_mode: no deadlock timer. A thousand-device history's activations replay for
    # seconds each; that is work, not a deadlock, and its verdict must not depend on the CPU.
    replayer = Replayer(workflows=REPLAY_WORKFLOWS, data_converter=data_converter, debug_mode=True)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    failure = result.replay_failure
    return ReplayOutcome(
        workflow_id=history.workflow_id,
        ok=failure is None,
        failure=None if failure is None else f"{type(failure).__name__}: {failure}",
    )


async def export_history(client: Client, workflow_id: str, out: Path) -> Path:
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            raise ValidationFailed(
                f"no workflow {workflow_id!r} on this Temporal namespace (an incident id, or "
                "a child's such as calls-INC-…; closed ones last as long as its retention)"
            ) from None
        raise
    return await asyncio.to_thread(save_history, history, out)


def save_history(history: WorkflowHistory, out: Path) -> Path:
    """Write a history and, beside it, its workflow id (Temporal's JSON omits it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(history.to_json(), encoding="utf-8")
    out.with_suffix(".meta").write_text(
        json.dumps({"workflow_id": history.workflow_id}), encoding="utf-8"
    )
    return out


__all__ = ["ReplayOutcome", "export_history", "load_history", "replay", "save_history"]
