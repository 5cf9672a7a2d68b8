"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, its own thread) that keeps what it got."""

from __future__ import annotations

import email
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fragments.mail_url import SmtpSecurity

_LINK = re.compile(r"https?://\S+#(reset|confirm)=([A-Za-z0-9_\-]+)")


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def text(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode(self.message.get_content_charset() or "utf-8")

    def link(self, kind: str) -> tuple[str, str]:
        """(the whole link, its token) of the first `#reset=` or `#confirm=` link."""
        for match in _LINK.finditer(self.text):
            if match.group(1) == kind:
                return match.group(0), match.group(2)
        raise AssertionError(f"no {kind} link in the mail:\n{self.text}")


@dataclass
class Mailbox:
    """What the server received, in order; `url` is the FRAGMENTS_SMTP_URL pointing at it."""

    url: str
    messages: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        received = Received(
            sender=str(envelope.mail_from),
            recipients=[str(r) for r in envelope.rcpt_tos],
            message=email.message_from_bytes(content),
        )
        with self._lock:
            self.messages.append(received)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if address in m.recipients]

    def wait_for(self, address: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """The mails to `address` once there are `count` (a browser test's app sends later)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{count} mail(s) to {address} did not arrive: {self.to(address)}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, self-signed: trusted only where the test says so."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class Login:
    """The one user and password the server accepts (AUTH, over TLS only)."""

    user: str
    password: str

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.user.encode()
            and data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False)


@contextmanager
def serving_mailbox(
    security: SmtpSecurity = "plain",
    *,
    login: Login | None = None,
    cert_dir: Path | None = None,
) -> Iterator[Mailbox]:
    """A real SMTP server on a free port of 127.0.0.1 while the block runs: plain, STARTTLS
    required, or TLS from the start (a self-signed certificate written into `cert_dir`)."""
    port = _free_port()
    scheme = {"plain": "smtp", "starttls": "smtp+starttls", "tls": "smtps"}[security]
    userinfo = f"{quote(login.user, safe='')}:{quote(login.password, safe='')}@" if login else ""
    box = Mailbox(url=f"{scheme}://{userinfo}127.0.0.1:{port}")
    options: dict[str, Any] = {}
    if login is not None:
        options["authenticator"] = login
    if security != "plain":
        assert cert_dir is not None
        cert, key = self_signed_certificate(cert_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if security == "starttls":
            options.update(tls_context=context, require_starttls=True)
        else:
            # The whole session is TLS, which aiosmtpd's "AUTH only after STARTTLS" check
            # does not see: it would never offer AUTH.
            options.update(ssl_context=context, auth_require_tls=False)
    controller = Controller(box, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server for the test's duration."""
    with serving_mailbox() as box:
        yield box
