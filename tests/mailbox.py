"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, its own thread) that keeps what it got."""

from __future__ import annotations

import email
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

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


@contextmanager
def serving_mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on a free port of 127.0.0.1 while the block runs."""
    port = _free_port()
    box = Mailbox(url=f"smtp://127.0.0.1:{port}")
    controller = Controller(box, hostname="127.0.0.1", port=port)
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
