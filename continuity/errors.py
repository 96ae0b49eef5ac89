"""The error tree; each class knows whether a retry can help.

    ContinuityError
    ├── ValidationFailed          bad input; never retried (also a ValueError, for pydantic)
    ├── PlaybookError             an invalid playbook spec
    ├── StorageError              the store failed (retryable)
    ├── TelephonyError            Twilio refused or could not be reached
    ├── ConfigurationError        settings a process cannot start with (e.g. production, no TLS)
    ├── DecisionRefused           an operator's decision that cannot take effect (recorded)
    │   ├── UnknownChange         no such change in this incident
    │   ├── ChangeNotPending      the change is not awaiting a decision (any more)
    │   ├── WindowClosed          its confirmation window closed first
    │   ├── AlreadyDecided        someone decided it first; the first decision stands
    │   ├── SelfDecision          the incident's declarer may not decide its changes
    │   ├── NotAConfirmer         the wave names its confirmers and this operator is not one
    │   └── StaleChange           the operator was shown other lines than the change sent
    └── DeviceError               a device session failed
        ├── DeviceUnreachable     connect refused / timed out (retryable)
        ├── SessionLost           dropped or hung mid-session (retryable)
        ├── DeviceBusy            another session holds the device's configuration (retryable)
        ├── DeviceLocked          another incident holds our device lock (not retryable: the
        │                         workflow waits for the lock outside SSH, then starts again)
        ├── SessionLimit          the device refused another session (retryable)
        ├── AuthenticationFailed  credentials refused (not retryable)
        ├── HostKeyRejected       unknown or changed host key (not retryable)
        ├── CommandRejected       the CLI answered with an error marker (not retryable)
        ├── VerificationFailed    the expected path never appeared (not retryable)
        └── ForeignPendingCommit  someone else's unconfirmed change is on the device (not retryable)

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


class WebhookFailed(ContinuityError):
    """A webhook receiver refused the notice (4xx: not retried) or did not answer (retried)."""

    retryable = True


class DecisionRefused(ContinuityError):
    """Refused with its context, so the API and the history can both say why."""

    def __init__(self, message: str, *, change_id: str = "", operator: str = "") -> None:
        super().__init__(message)
        self.change_id = change_id
        self.operator = operator


class UnknownOperator(DecisionRefused):
    """The token's subject is not an operator of the inventory the store holds now."""


class UnknownChange(DecisionRefused):
    pass


class ChangeNotPending(DecisionRefused):
    pass


class WindowClosed(DecisionRefused):
    pass


class AlreadyDecided(DecisionRefused):
    pass


class SelfDecision(DecisionRefused):
    pass


class NotAConfirmer(DecisionRefused):
    pass


class StaleChange(DecisionRefused):
    """The decision names the hash of lines the operator was shown; the change sent others."""


class DeviceError(ContinuityError):
    pass


class DeviceUnreachable(DeviceError):
    retryable = True


class SessionLost(DeviceError):
    retryable = True


class DeviceBusy(DeviceError):
    retryable = True


class DeviceLocked(DeviceError):
    """Another incident's change holds the device; retrying in place would only hold an SSH slot."""


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


class ForeignPendingCommit(DeviceError):
    pass


class TemporalUnavailable(ContinuityError):
    """The Temporal frontend does not answer (down, wrong address, refused)."""


class TokenRefused(ContinuityError):
    """A bearer token that names nobody: unknown, revoked or expired (the message says which)."""


class RoleConflict(ContinuityError):
    """One subject, one role: a duty officer who could also confirm would confirm their own."""


class UnknownToken(ContinuityError):
    pass


class ConfigurationError(ContinuityError):
    """Settings this process cannot start with; the message names the ones to fix."""


__all__ = [
    "AlreadyDecided",
    "AuthenticationFailed",
    "ChangeNotPending",
    "CommandRejected",
    "ConfigurationError",
    "ContinuityError",
    "RoleConflict",
    "TemporalUnavailable",
    "TokenRefused",
    "UnknownToken",
    "DecisionRefused",
    "DeviceBusy",
    "DeviceError",
    "DeviceLocked",
    "DeviceUnreachable",
    "ForeignPendingCommit",
    "HostKeyRejected",
    "NotAConfirmer",
    "StaleChange",
    "PlaybookError",
    "SelfDecision",
    "SessionLimit",
    "SessionLost",
    "StorageError",
    "TelephonyError",
    "UnknownChange",
    "UnknownOperator",
    "ValidationFailed",
    "VerificationFailed",
    "WindowClosed",
]
