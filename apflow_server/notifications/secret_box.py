"""The signing secrets of notification endpoints, encrypted at rest.

Signing needs the secret itself, so the database keeps it encrypted (Fernet: AES-128-CBC with
HMAC-SHA256) under the instance's secret key: APFLOW_SECRET_KEY, shared by every instance of a
deployment, or, on a single machine, a key generated once into APFLOW_HOME/secret.key (0600).
A database copied without its key holds no usable secret.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from apflow_server.config import Settings, ensure_folder

KEY_FILE = "secret.key"


class SecretUnreadable(Exception):
    """The stored secret was encrypted under another key."""


class SecretBox:
    def __init__(self, key: str) -> None:
        from cryptography.fernet import Fernet  # imported when needed: it takes a while

        # Any string is a key: it is stretched to Fernet's 32 bytes by SHA-256.
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))

    @classmethod
    def for_settings(cls, settings: Settings) -> SecretBox:
        return cls(instance_key(settings))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "the endpoint's secret was encrypted under another APFLOW_SECRET_KEY"
            ) from None


def instance_key(settings: Settings) -> str:
    """The key every instance of a deployment shares: APFLOW_SECRET_KEY, or on a single
    machine the one in APFLOW_HOME/secret.key. It encrypts endpoint secrets and keys the
    dashboard's form tokens (each use derives its own key from it)."""
    return instance_key_of(settings.secret_key, str(settings.home))


def instance_key_of(secret_key: str | None, home: str) -> str:
    return secret_key or _key_file(Path(home))


def _key_file(home: Path) -> str:
    """This machine's key, made on first use (created exclusively: two processes starting at
    once read the same one)."""
    path = home / KEY_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    ensure_folder(home, "APFLOW_HOME")
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key
