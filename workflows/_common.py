"""Activity names, task queues, retry policies and timeouts shared by the workflows (no I/O)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Registered activity names: they live in histories, never rename them casually.
APPLY_DEVICE_CHANGE = "apply_device_change"
AWAIT_DEVICE_LOCK = "await_device_lock"
CONFIRM_DEVICE_CHANGE = "confirm_device_change"
UNDO_DEVICE_CHANGE = "undo_device_change"
READ_BACK_DEVICE = "read_back_device"
HOLD_CIRCUITS = "hold_circuits"
RELEASE_CIRCUITS = "release_circuits"
PLACE_CALL = "place_call"
SEND_SMS = "send_sms"
WRITE_REPORTS = "write_reports"
WRITE_OFF_DEVICE = "write_off_device"
POST_WEBHOOK = "post_webhook"

# Registered signal names.
STOP_SIGNAL = "stop"


def ssh_retry(*, attempts: int, initial_s: float) -> RetryPolicy:
    """A dropped session or an unreachable device is worth a few tries; an auth failure,
    a host-key mismatch or a CLI rejection is not. The activities say which, on each failure
    (activities/_errors.py sets non_retryable from the error): no type list travels here, so
    each of hundreds of scheduled steps stays small in the history."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=initial_s),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=attempts,
    )


TELEPHONY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
)
STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=20)
STORE_TIMEOUT = timedelta(seconds=30)


def webhook_retry(attempts: int) -> RetryPolicy:
    """A webhook receiver that does not answer is asked again, backing off to 30 s."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=attempts,
    )
