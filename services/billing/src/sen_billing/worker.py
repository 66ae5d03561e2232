"""The billing worker process: event consumers and the outbox relay.

Publishes its own events through the outbox relay.
Run as `python -m sen_billing.worker`.
"""

from __future__ import annotations

from sen_shared.bus.worker import run_worker
from sen_shared.logs import setup_logging

from .config import settings_from_env

HANDLERS = {}
OUTBOX_COLLECTIONS: list[str] = []


def main() -> int:
    settings = settings_from_env()
    setup_logging(f"{settings.service}-worker", settings.log_level)
    run_worker(settings, handlers=HANDLERS, outbox_collections=OUTBOX_COLLECTIONS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
