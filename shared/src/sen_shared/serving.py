"""The gunicorn worker class of every Sen web process: ``uvicorn_worker.UvicornWorker`` configured
through its documented ``CONFIG_KWARGS``, nothing overridden.

connexion 3's ``FlaskApp`` is an ASGI application; gunicorn forks the workers and each runs uvicorn's
server on it (``uvicorn.workers`` is deprecated in favour of the ``uvicorn-worker`` package). The settings
given here: uvicorn's ``http`` protocol is :class:`~sen_shared.coalesce.CoalescingHttpToolsProtocol`,
which writes each answer with one system call; and no ``server: uvicorn`` banner (``server_header``),
which told every client the server's make.
"""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

from .coalesce import CoalescingHttpToolsProtocol


class SenUvicornWorker(UvicornWorker):
    """``gunicorn -k sen_shared.serving.SenUvicornWorker``: uvicorn with one write per answer."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": CoalescingHttpToolsProtocol, "server_header": False}
