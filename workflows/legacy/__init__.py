"""Frozen for replay of histories recorded before the incident-core rewrite: never change these."""

from workflows.legacy.device_change_v1 import DeviceChangeWorkflowV1
from workflows.legacy.playbook_v1 import PlaybookWorkflowV1

LEGACY_WORKFLOWS = [PlaybookWorkflowV1, DeviceChangeWorkflowV1]

__all__ = ["LEGACY_WORKFLOWS", "DeviceChangeWorkflowV1", "PlaybookWorkflowV1"]
