"""Signed human actions: the API attests who did what to which incident, the workflow checks it.

Every human action the API forwards to an incident (declare, decide, stand down, abort, write
off a device) carries an `Attestation` signed with the deployment's Ed25519 key
(continuity.signing): who (subject, role, token id), what (action, incident, change, and the
SHA-256 of the action's content: the decision and its reason, the stand-down's reason, ...),
and when. The workflow gets the public keys in its input, so replay stays deterministic, and
refuses, on the record, an action whose attestation is missing or does not verify: a client
that signals Temporal directly cannot act in anyone's name. `continuity audit verify` checks
the same attestations again, offline, against the keys the auditor trusts.

Pure functions: the workflow imports this module (cryptography passes through its sandbox).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from continuity.models import Compact

# "decide_refused": the API's word that an operator's decision was refused (and why), so that
# no client can put a refused attempt in an operator's name into the history.
Action = Literal["declare", "decide", "decide_refused", "stand_down", "abort", "write_off"]


class Attestation(Compact):
    """What travels with an action: who signed for it, when, with which key, and the signature.

    The signature covers these and what the action itself says (action, incident, change,
    subject, the SHA-256 of its content), which the verifier recomputes from the action: a
    rewritten operator id or reason no longer matches what was signed. Kept small: one rides
    on each of hundreds of decisions in an incident's history.
    """

    role: str
    token_id: str = ""
    at: datetime
    key: str  # the signing key's fingerprint
    signature: str = ""  # base64 Ed25519 over signed_bytes()

    def signed_bytes(
        self, *, action: Action, incident_id: str, subject: str, change_id: str, content_sha: str
    ) -> bytes:
        body = {
            "action": action,
            "incident_id": incident_id,
            "subject": subject,
            "change_id": change_id,
            "content_sha256": content_sha,
            "role": self.role,
            "token_id": self.token_id,
            "at": self.at.isoformat(),
            "key": self.key,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def content_sha256(content: dict[str, Any]) -> str:
    """The hash an attestation carries of what the action says (canonical JSON)."""
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def raw_public_key(public: Ed25519PublicKey) -> str:
    """A public key as a workflow input carries it: base64 of its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_fingerprint(raw_b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(raw_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def attest(
    key: Ed25519PrivateKey,
    *,
    action: Action,
    incident_id: str,
    subject: str,
    role: str,
    token_id: str,
    content: dict[str, Any],
    at: datetime,
    change_id: str = "",
) -> Attestation:
    a = Attestation(
        role=role,
        token_id=token_id,
        at=at,
        key=key_fingerprint(raw_public_key(key.public_key())),
    )
    signed = a.signed_bytes(
        action=action,
        incident_id=incident_id,
        subject=subject,
        change_id=change_id,
        content_sha=content_sha256(content),
    )
    a.signature = base64.b64encode(key.sign(signed)).decode()
    return a


class Attester:
    """The API's side: signs each human action with the deployment's key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_keys = [raw_public_key(key.public_key())]

    def __call__(
        self,
        *,
        action: Action,
        incident_id: str,
        subject: str,
        role: str,
        token_id: str,
        content: dict[str, Any],
        at: datetime,
        change_id: str = "",
    ) -> Attestation:
        return attest(
            self._key,
            action=action,
            incident_id=incident_id,
            subject=subject,
            role=role,
            token_id=token_id,
            content=content,
            at=at,
            change_id=change_id,
        )


def attestation_problem(
    a: Attestation | None,
    keys: list[str],
    *,
    action: Action,
    incident_id: str,
    subject: str,
    content: dict[str, Any],
    change_id: str = "",
) -> str | None:
    """Why `a` does not attest this action by `subject` (None: it does)."""
    if a is None:
        return "no attestation: not sent through the API"
    raw = next((k for k in keys if key_fingerprint(k) == a.key), None)
    if raw is None:
        return f"signed by {a.key}, not a key this incident trusts"
    signed = a.signed_bytes(
        action=action,
        incident_id=incident_id,
        subject=subject,
        change_id=change_id,
        content_sha=content_sha256(content),
    )
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw))
        public.verify(base64.b64decode(a.signature), signed)
    except (InvalidSignature, ValueError):
        return (
            "the attestation does not verify: the action, its content, its person or its "
            "incident is not what the API signed"
        )
    return None


__all__ = [
    "Action",
    "Attestation",
    "Attester",
    "attest",
    "attestation_problem",
    "content_sha256",
    "key_fingerprint",
    "raw_public_key",
]
