"""Frozen activity names, retry policies and timeouts of the legacy workflows."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Frozen from continuity.errors.NON_RETRYABLE_TYPES at commit 4419aad.
NON_RETRYABLE_TYPES = [
    "ValidationFailed",
    "PlaybookError",
    "AuthenticationFailed",
    "HostKeyRejected",
    "CommandRejected",
    "VerificationFailed",
]

# Registered activity names as recorded in the histories.
LOCK_DEVICE = "lock_device"
UNLOCK_DEVICE = "unlock_device"
PRECHECK_DEVICE = "precheck_device"
APPLY_CHANGE = "apply_change"
VERIFY_CHANGE = "verify_change"
CONFIRM_CHANGE = "confirm_change"
ROLLBACK_CHANGE = "rollback_change"
AWAIT_DEVICE_REVERT = "await_device_revert"
SEND_SMS = "send_sms"
WRITE_REPORT = "write_report"


def ssh_retry(*, attempts: int, initial_s: float) -> RetryPolicy:
    """A dropped session or an unreachable device is worth a few tries; an auth failure,
    a host-key mismatch or a CLI rejection is not."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=initial_s),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=attempts,
        non_retryable_error_types=NON_RETRYABLE_TYPES,
    )


# Waiting for another incident's change on the same device to finish.
LOCK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
)
TELEPHONY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_attempts=10)
STORE_TIMEOUT = timedelta(seconds=30)
