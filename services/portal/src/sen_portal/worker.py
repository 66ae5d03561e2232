"""The portal worker process: event consumers and the outbox relay.

Feeds the reporting read model from every event (queue portal.reporting).
Run as `python -m sen_portal.worker`.
"""

from __future__ import annotations

from sen_shared.entrypoints import run_worker_process

from .config import settings_from_env
from .domain.reporting import count_event

HANDLERS = {"portal.reporting": count_event}
OUTBOX_COLLECTIONS: list[str] = []


def main() -> int:
    return run_worker_process(settings_from_env, HANDLERS, OUTBOX_COLLECTIONS)


if __name__ == "__main__":
    raise SystemExit(main())
