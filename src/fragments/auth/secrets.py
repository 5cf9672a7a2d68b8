"""Provider keys at rest: Fernet-encrypted, shown back only as a hint (the last 4 characters)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from fragments.config import Settings


def fernet(settings: Settings) -> Fernet:
    """FRAGMENTS_ENCRYPTION_KEY when set, else a key derived from FRAGMENTS_SECRET_KEY (which
    production refuses to leave at its default)."""
    if settings.encryption_key is not None:
        return Fernet(settings.encryption_key.get_secret_value().encode())
    secret = settings.secret_key.get_secret_value().encode()
    digest = hashlib.sha256(b"fragments provider keys\0" + secret).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(settings: Settings, plaintext: str) -> str:
    return fernet(settings).encrypt(plaintext.encode()).decode()


def decrypt(settings: Settings, ciphertext: str) -> str | None:
    """None when the key changed since it was stored (the user saves it again)."""
    try:
        return fernet(settings).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        return None


def hint(plaintext: str) -> str:
    return "…" + plaintext[-4:] if len(plaintext) > 8 else "…"
