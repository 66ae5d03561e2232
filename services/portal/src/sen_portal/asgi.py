"""The ASGI entry point gunicorn imports (`gunicorn sen_portal.asgi:app`); nothing else imports it."""

from .app import create_app

app = create_app()
