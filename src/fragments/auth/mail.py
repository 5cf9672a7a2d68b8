"""Sending mail over SMTP: the standard library's smtplib, one connection per message, run in
a worker thread so the event loop never waits on a mail server."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import structlog
from fastapi import BackgroundTasks

from fragments.config import Settings
from fragments.errors import UpstreamError
from fragments.mail_url import SmtpTarget, parse_smtp_url

log = structlog.get_logger(__name__)

TIMEOUT_SECONDS = 15.0


class MailUnavailable(UpstreamError):
    status_code = 503
    code = "mail_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The mail server did not accept the message; please try again shortly.",
            headers={"Retry-After": "30"},
        )


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


def _message(sender: str, mail: Mail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="fragments.local")
    message.set_content(mail.text)
    return message


def _send_blocking(target: SmtpTarget, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if target.security == "tls":
        client = smtplib.SMTP_SSL(
            target.host, target.port, timeout=TIMEOUT_SECONDS, context=context
        )
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=TIMEOUT_SECONDS)
    with client:
        if target.security == "starttls":
            client.starttls(context=context)
        if target.username is not None:
            client.login(target.username, target.password or "")
        client.send_message(message)


class Mailer:
    """Sends plain-text mail from `sender` through the server at `target`."""

    def __init__(self, target: SmtpTarget, sender: str) -> None:
        self.target = target
        self.sender = sender

    async def send(self, mail: Mail) -> None:
        """Deliver to the server or raise `MailUnavailable` (the server refused or is down)."""
        try:
            await asyncio.to_thread(_send_blocking, self.target, _message(self.sender, mail))
        except (smtplib.SMTPException, OSError) as exc:
            log.warning(
                "mail_failed", host=self.target.host, port=self.target.port, error=repr(exc)
            )
            raise MailUnavailable() from exc


def mailer(settings: Settings) -> Mailer | None:
    """The configured mailer, or None when FRAGMENTS_SMTP_URL is unset (mail is off)."""
    if settings.smtp_url is None:
        return None
    return Mailer(parse_smtp_url(settings.smtp_url.get_secret_value()), settings.mail_from)


async def _send_quietly(sender: Mailer, mail: Mail) -> None:
    # Logged by `send`; the caller was already answered, so there is nobody to tell.
    with contextlib.suppress(MailUnavailable):
        await sender.send(mail)


def send_after_response(background: BackgroundTasks, settings: Settings, mail: Mail | None) -> None:
    """Send once the answer is out: the answer takes as long whether or not a mail goes (so
    its timing does not tell whether an address has an account), and a slow mail server does
    not hold the request."""
    sender = mailer(settings)
    if mail is not None and sender is not None:
        background.add_task(_send_quietly, sender, mail)
