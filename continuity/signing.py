"""The deployment's Ed25519 key: what signs audit bundles, and how a signature is checked.

The private key is a PKCS#8 PEM file (mode 0600, CONTINUITY_SIGNING_KEY); its public half a
SubjectPublicKeyInfo PEM file handed to auditors. A key is named by its fingerprint,
``SHA256:`` and the unpadded base64 of the SHA-256 of the raw 32-byte public key (the form
`ssh-keygen -l` prints). Rotation: generate a new pair, point CONTINUITY_SIGNING_KEY at it and
give auditors the new public key beside the old ones; what an old key signed stays verifiable
with the old public key, which is never deleted from the auditors' set.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from continuity.attestation import Attester, key_fingerprint, raw_public_key
from continuity.errors import ConfigurationError, ValidationFailed
from continuity.settings import Settings


def fingerprint(public: Ed25519PublicKey) -> str:
    return key_fingerprint(raw_public_key(public))


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    fingerprint: str


def generate_key_pair(private_path: Path, *, overwrite: bool = False) -> KeyPair:
    """A new key pair: `private_path` (0600) and `private_path` + ".pub"."""
    public_path = private_path.with_name(private_path.name + ".pub")
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise ValidationFailed(
            f"{private_path} or its .pub exists: a signing key is never overwritten silently "
            "(old records stay verifiable only with their key; pass --force to replace it)"
        )
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return KeyPair(private_path, public_path, fingerprint(key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigurationError(f"signing key {path}: cannot read it: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"signing key {path}: not an unencrypted PEM key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"signing key {path}: not an Ed25519 key")
    return key


def load_attester(settings: Settings) -> Attester | None:
    """The API's signer of human actions: the deployment's key if there is one."""
    path = settings.signing_key_path
    if not path.exists():
        return None
    return Attester(load_private_key(path))


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValidationFailed(f"public key {path}: cannot read it: {e.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:  # a private key given where its public half was meant: take the public half
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise ValidationFailed(f"public key {path}: not a PEM key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationFailed(f"public key {path}: not an Ed25519 key")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify(public: Ed25519PublicKey, data: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = [
    "KeyPair",
    "fingerprint",
    "generate_key_pair",
    "load_attester",
    "load_private_key",
    "load_public_key",
    "public_pem",
    "sign",
    "verify",
]
