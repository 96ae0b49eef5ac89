"""Temporal workflow code only: deterministic, no I/O."""

from workflows.duty_call import DutyCallWorkflow
from workflows.incident import IncidentWorkflow, calls_workflow_id, change_id, restore_id
from workflows.legacy import LEGACY_WORKFLOWS

ALL_WORKFLOWS = [IncidentWorkflow, DutyCallWorkflow]
# Auditors replay recorded histories: today's workflows and the frozen ones they replaced.
REPLAY_WORKFLOWS = [IncidentWorkflow, DutyCallWorkflow, *LEGACY_WORKFLOWS]

__all__ = [
    "ALL_WORKFLOWS",
    "DutyCallWorkflow",
    "IncidentWorkflow",
    "REPLAY_WORKFLOWS",
    "calls_workflow_id",
    "change_id",
    "restore_id",
]
