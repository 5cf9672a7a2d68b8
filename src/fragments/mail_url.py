"""FRAGMENTS_SMTP_URL: the mail server's address, parsed low enough for the settings to check
it at start-up and for `auth.mail` to send through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

SmtpSecurity = Literal["plain", "starttls", "tls"]
# scheme -> (how the connection is secured, the usual port for it)
SCHEMES: dict[str, tuple[SmtpSecurity, int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    security: SmtpSecurity
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://`, `smtp+starttls://` or `smtps://`, with optional `user:password@` and port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"FRAGMENTS_SMTP_URL must start with {', '.join(s + '://' for s in SCHEMES)}."
        )
    if not parts.hostname:
        raise ValueError("FRAGMENTS_SMTP_URL names no host.")
    security, default_port = SCHEMES[scheme]
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or default_port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
