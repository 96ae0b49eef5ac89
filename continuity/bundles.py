"""The layout of an audit bundle (written and verified by app/bundle.py, read by the period
report): a directory of files named by its manifest, which is signed."""

FORMAT = "continuity-bundle/1"
MANIFEST = "manifest.json"  # format, incident, time, key fingerprint, SHA-256 of every file
SIGNATURE = "manifest.json.sig"  # base64 Ed25519 signature of manifest.json

__all__ = ["FORMAT", "MANIFEST", "SIGNATURE"]
