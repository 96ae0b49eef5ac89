"""Temporal workflow code only: deterministic, no I/O."""

from workflows.device_change import DeviceChangeWorkflow
from workflows.duty_call import DutyCallWorkflow
from workflows.playbook import PlaybookWorkflow, calls_workflow_id, change_id

ALL_WORKFLOWS = [PlaybookWorkflow, DeviceChangeWorkflow, DutyCallWorkflow]

__all__ = [
    "ALL_WORKFLOWS",
    "DeviceChangeWorkflow",
    "DutyCallWorkflow",
    "PlaybookWorkflow",
    "calls_workflow_id",
    "change_id",
]
