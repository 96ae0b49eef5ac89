"""The error tree; each class knows whether a retry can help.

    ContinuityError
    ├── ValidationFailed          bad input; never retried (also a ValueError, for pydantic)
    ├── PlaybookError             an invalid playbook spec
    ├── StorageError              the store failed (retryable)
    ├── TelephonyError            Twilio refused or could not be reached
    └── DeviceError               a device session failed
        ├── DeviceUnreachable     connect refused / timed out (retryable)
        ├── SessionLost           dropped or hung mid-session (retryable)
        ├── DeviceBusy            another change holds the device lock (retryable)
        ├── SessionLimit          the device refused another session (retryable)
        ├── AuthenticationFailed  credentials refused (not retryable)
        ├── HostKeyRejected       unknown or changed host key (not retryable)
        ├── CommandRejected       the CLI answered with an error marker (not retryable)
        └── VerificationFailed    the expected path never appeared (not retryable)

Each class knows whether a retry can help; activities raise
``ApplicationError(type=cls.__name__, non_retryable=not cls.retryable)`` from it.
"""

from __future__ import annotations

from typing import ClassVar


class ContinuityError(Exception):
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable  # type: ignore[misc]

    @property
    def type(self) -> str:
        return type(self).__name__


class ValidationFailed(ContinuityError, ValueError):
    pass


class PlaybookError(ContinuityError):
    pass


class StorageError(ContinuityError):
    retryable = True


class TelephonyError(ContinuityError):
    retryable = True


class DeviceError(ContinuityError):
    pass


class DeviceUnreachable(DeviceError):
    retryable = True


class SessionLost(DeviceError):
    retryable = True


class DeviceBusy(DeviceError):
    retryable = True


class SessionLimit(DeviceError):
    retryable = True


class AuthenticationFailed(DeviceError):
    pass


class HostKeyRejected(DeviceError):
    pass


class CommandRejected(DeviceError):
    pass


class VerificationFailed(DeviceError):
    pass


NON_RETRYABLE_TYPES: list[str] = [
    c.__name__
    for c in (
        ValidationFailed,
        PlaybookError,
        AuthenticationFailed,
        HostKeyRejected,
        CommandRejected,
        VerificationFailed,
    )
]

__all__ = [
    "AuthenticationFailed",
    "CommandRejected",
    "ContinuityError",
    "DeviceBusy",
    "DeviceError",
    "DeviceUnreachable",
    "HostKeyRejected",
    "NON_RETRYABLE_TYPES",
    "PlaybookError",
    "SessionLimit",
    "SessionLost",
    "StorageError",
    "TelephonyError",
    "ValidationFailed",
    "VerificationFailed",
]
