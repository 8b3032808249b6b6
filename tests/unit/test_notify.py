"""E-mail notifications against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import email
import logging
import socket
import time
from email import policy

import pytest

from ptychompi.app.notify import notify_run_end, send_email
from ptychompi.config import EmailConfig, NotifyConfig, OutputConfig

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00"
       b"\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc\xf8\x0f\x00\x01\x01\x01\x00\x18\xdd\x8d\xb4\x00"
       b"\x00\x00\x00IEND\xaeB`\x82")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _auth(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"beamline"
          and auth_data.password == b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def smtp_server():
    handler = Collector()
    port = _free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, authenticator=_auth,
                     auth_require_tls=False)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


def _cfg(port: int, **kw) -> EmailConfig:
    return EmailConfig(to=["user@example.org", "pi@example.org"], smtp_host="127.0.0.1",
                       smtp_port=port, sender="ptychompi@beamline", **kw)


def test_message_arrives_with_attachment(smtp_server, tmp_path, caplog):
    handler, port = smtp_server
    png = tmp_path / "result_object_phase.png"
    png.write_bytes(PNG)
    with caplog.at_level(logging.INFO, logger="ptychompi"):
        assert send_email(_cfg(port), "run finished", "final error 1.2e-02\n", [png]) is True
    assert len(handler.messages) == 1
    sender, rcpts, raw = handler.messages[0]
    assert sender == "ptychompi@beamline"
    assert rcpts == ["user@example.org", "pi@example.org"]
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "run finished"
    assert "final error 1.2e-02" in msg.get_body(preferencelist=("plain",)).get_content()
    parts = list(msg.iter_attachments())
    assert [p.get_filename() for p in parts] == ["result_object_phase.png"]
    assert parts[0].get_content_type() == "image/png"
    assert parts[0].get_content() == PNG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_login_with_password_from_environment(smtp_server, monkeypatch):
    handler, port = smtp_server
    monkeypatch.setenv("PTYCHO_SMTP_PW", "s3cret")
    cfg = _cfg(port, username="beamline", password_env="PTYCHO_SMTP_PW")
    assert send_email(cfg, "s", "b", []) is True
    assert len(handler.messages) == 1


def test_wrong_password_warns_and_returns_false(smtp_server, monkeypatch, caplog):
    handler, port = smtp_server
    monkeypatch.setenv("PTYCHO_SMTP_PW", "wrong")
    cfg = _cfg(port, username="beamline", password_env="PTYCHO_SMTP_PW")
    with caplog.at_level(logging.WARNING, logger="ptychompi"):
        assert send_email(cfg, "s", "b", []) is False
    assert handler.messages == []
    assert any("SMTPAuthenticationError" in r.getMessage() for r in caplog.records)


def test_missing_password_variable(smtp_server, monkeypatch, caplog):
    _, port = smtp_server
    monkeypatch.delenv("PTYCHO_SMTP_PW", raising=False)
    cfg = _cfg(port, username="beamline", password_env="PTYCHO_SMTP_PW")
    with caplog.at_level(logging.WARNING, logger="ptychompi"):
        assert send_email(cfg, "s", "b", []) is False
    assert any("PTYCHO_SMTP_PW" in r.getMessage() for r in caplog.records)


def test_starttls_unsupported_is_a_warning(smtp_server, caplog):
    handler, port = smtp_server
    with caplog.at_level(logging.WARNING, logger="ptychompi"):
        assert send_email(_cfg(port, starttls=True), "s", "b", []) is False
    assert handler.messages == []
    assert caplog.records


def test_unreachable_port_returns_false(caplog):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ptychompi"):
        assert send_email(_cfg(port), "s", "b", []) is False
    assert time.monotonic() - t0 < 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"127.0.0.1:{port}" in warnings[0].getMessage()


def test_notify_run_end(smtp_server, tmp_path):
    handler, port = smtp_server
    out = OutputConfig(directory=str(tmp_path), notify=NotifyConfig(email=_cfg(port)))
    png = tmp_path / "p.png"
    png.write_bytes(PNG)
    assert notify_run_end(out, "summary text", False, [png, tmp_path / "missing.png"]) is True
    msg = email.message_from_bytes(handler.messages[0][2], policy=policy.default)
    assert "FAILED" in msg["Subject"]
    assert [p.get_filename() for p in msg.iter_attachments()] == ["p.png"]
    # no e-mail configured: nothing is sent
    assert notify_run_end(OutputConfig(directory=str(tmp_path)), "x", True, []) is False
    assert len(handler.messages) == 1
