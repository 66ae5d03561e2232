"""The portal worker process: event consumers and the outbox relay.

Feeds the reporting read model from every event (queue portal.reporting).
Run as `python -m sen_portal.worker`.
"""

from __future__ import annotations

from sen_shared.bus.worker import run_worker
from sen_shared.logs import setup_logging

from .config import settings_from_env
from .domain.reporting import count_event

HANDLERS = {"portal.reporting": count_event}
OUTBOX_COLLECTIONS: list[str] = []


def main() -> int:
    settings = settings_from_env()
    setup_logging(f"{settings.service}-worker", settings.log_level)
    run_worker(settings, handlers=HANDLERS, outbox_collections=OUTBOX_COLLECTIONS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
