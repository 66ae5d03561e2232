"""The billing worker process: event consumers and the outbox relay.

Publishes its own events through the outbox relay.
Run as `python -m sen_billing.worker`.
"""

from __future__ import annotations

from sen_shared.entrypoints import run_worker_process

from .config import settings_from_env

HANDLERS = {}
OUTBOX_COLLECTIONS: list[str] = ["payments", "receipts"]  # billing.payment.received, billing.invoice.paid


def main() -> int:
    return run_worker_process(settings_from_env, HANDLERS, OUTBOX_COLLECTIONS)


if __name__ == "__main__":
    raise SystemExit(main())
