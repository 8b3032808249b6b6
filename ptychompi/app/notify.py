"""E-mail notification at the end of a run. A failed notification never fails the run."""

from __future__ import annotations

import logging
import mimetypes
import os
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from ..config import EmailConfig, OutputConfig

__all__ = ["send_email", "notify_run_end", "SMTP_TIMEOUT_S"]

SMTP_TIMEOUT_S = 10.0
log = logging.getLogger("ptychompi")


def _message(cfg: EmailConfig, subject: str, body: str,
             attachments: Sequence[str | os.PathLike]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to or [])
    msg.set_content(body)
    for a in attachments:
        p = Path(a)
        try:
            data = p.read_bytes()
        except OSError as exc:
            log.warning("e-mail: attachment %s left out (%s)", p, exc.strerror or exc)
            continue
        ctype, _ = mimetypes.guess_type(p.name)
        maintype, subtype = (ctype or "application/octet-stream").split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=p.name)
    return msg


def send_email(cfg: EmailConfig, subject: str, body: str,
               attachments: Sequence[str | os.PathLike] = ()) -> bool:
    """Send one message; on any failure log a warning and return False (never raises)."""
    where = f"{cfg.smtp_host}:{cfg.smtp_port}"
    try:
        if not cfg.to:
            raise ValueError("no recipients (output.notify.email.to is empty)")
        password = None
        if cfg.username:
            if not cfg.password_env or cfg.password_env not in os.environ:
                raise ValueError(f"username {cfg.username!r} is set but the password variable "
                                 f"{cfg.password_env or '(output.notify.email.password_env)'}"
                                 " is not in the environment")
            password = os.environ[cfg.password_env]
        msg = _message(cfg, subject, body, attachments)
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=SMTP_TIMEOUT_S) as smtp:
            smtp.ehlo()
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, password or "")
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException, ValueError) as exc:  # timeouts, TLS: OSError
        log.warning("e-mail notification via %s failed (%s: %s); the results are not affected",
                    where, type(exc).__name__, exc)
        return False
    except Exception as exc:  # noqa: BLE001 - a notification must never end a finished run
        log.warning("e-mail notification via %s failed unexpectedly (%s: %s)",
                    where, type(exc).__name__, exc)
        return False
    log.info("e-mailed the run summary to %s", ", ".join(cfg.to))
    return True


def notify_run_end(output_cfg: OutputConfig, summary: str, success: bool,
                   attachments: Sequence[str | os.PathLike] = ()) -> bool:
    """E-mail the summary (and PNG previews) if ``output.notify.email`` is set; else no-op.

    Returns True only when a message was sent.
    """
    notify = getattr(output_cfg, "notify", None)
    email = getattr(notify, "email", None)
    if email is None or not email.to:
        return False
    status = "finished" if success else "FAILED"
    subject = f"ptychompi run {status} on {socket.gethostname()}: {output_cfg.directory}"
    existing = [a for a in attachments if Path(a).is_file()]
    return send_email(email, subject, summary, existing)
