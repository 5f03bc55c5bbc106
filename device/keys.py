"""Ed25519 keys: a key id derived from the public key, PEM files, signing and verification."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.errors import SignatureError

__all__ = [
    "TrustedKeys",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "load_trusted_keys",
    "sign",
    "verify",
]

# key_id -> public key; several keys at once so operators can rotate signing keys.
TrustedKeys = dict[str, Ed25519PublicKey]


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key: short, stable, unambiguous."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: Path) -> tuple[Path, Path]:
    """Write `<key_id>.key` (private, PKCS8 PEM, mode 600) and `<key_id>.pub` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    priv_path, pub_path = out_dir / f"{kid}.key", out_dir / f"{kid}.pub"
    priv_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    priv_path.chmod(0o600)
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


def load_trusted_keys(paths: list[Path]) -> TrustedKeys:
    """Public keys from files, or from every `*.pub` in a directory."""
    keys: TrustedKeys = {}
    for path in paths:
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        for file in files:
            public = load_public_key(file)
            keys[key_id(public)] = public
    return keys


def sign(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    return private_key.sign(data)


def verify(data: bytes, signature: bytes, kid: str, trusted: TrustedKeys) -> None:
    """Raise SignatureError unless `signature` is a valid signature of `data` by key `kid`."""
    public = trusted.get(kid)
    if public is None:
        raise SignatureError(f"bundle signed by key {kid!r}, which is not among the trusted keys")
    try:
        public.verify(signature, data)
    except InvalidSignature as exc:
        raise SignatureError("manifest signature does not verify: the bundle was altered") from exc
