"""What the suites of the notification port share: a local SMTP server (aiosmtpd, loopback) that keeps
the messages it took, and a sender whose worker dies right after the server took a message."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import free_port


class LocalSmtp:
    """An SMTP server on 127.0.0.1 (a free port, known before it starts): ``received`` holds the
    messages it accepted (``email.message.Message``). Started and stopped as a context manager."""

    def __init__(self) -> None:
        controller = pytest.importorskip("aiosmtpd.controller")
        from aiosmtpd.handlers import Message as MessageHandler

        self.port = free_port()
        self.received: list[Any] = []
        received = self.received

        class Collect(MessageHandler):
            def handle_message(self, message: Any) -> None:
                received.append(message)

        self._controller = controller.Controller(Collect(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> LocalSmtp:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def message_ids(message: Any) -> list[str]:
    """A received message's ``Message-ID`` headers, unfolded: the email library folds a header longer
    than 78 characters onto a continuation line (RFC 5322 FWS before the ``<``), as a long id is."""
    return [" ".join(str(v).split()) for v in message.get_all("Message-ID") or ()]


class WorkerDied(BaseException):
    """The worker process ending abruptly (not an error the job handles)."""


class DiesAfterTheServerTookIt:
    """A sender whose worker dies right after the SMTP server accepted the message, before the
    outcome is recorded."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender

    def send(self, message: Any) -> None:
        self.sender.send(message)
        raise WorkerDied
