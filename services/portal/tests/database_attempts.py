"""How many times the code under test asked a MongoDB server, and how many of those found none, as pymongo itself
records it: each operation (a read or a write) begins with a server selection, which pymongo's
``pymongo.serverSelection`` logger records at DEBUG as started, then succeeded or failed (no server within its
time); counted here while the test looks. Its monitor's own checks are no selection. Not the portal's own account
of its attempts (``sen_portal.portal_db``): the driver's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

STARTED = "Server selection started"  # pymongo.logger._ServerSelectionStatusMessage.STARTED
FAILED = "Server selection failed"  # pymongo.logger._ServerSelectionStatusMessage.FAILED


class Attempts(logging.Handler):
    """The failed server selections since the last :meth:`take`, and the started ones (every use of a database)
    since the last :meth:`asked`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed = 0
        self.started = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if FAILED in message:
            self.failed += 1
        elif STARTED in message:
            self.started += 1

    def take(self) -> int:
        """The failed attempts counted since the last call."""
        taken, self.failed = self.failed, 0
        return taken

    def asked(self) -> int:
        """The operations that asked a server (each one's selection started) since the last call."""
        taken, self.started = self.started, 0
        return taken


@contextmanager
def failed_attempts() -> Iterator[Attempts]:
    """Count pymongo's server selections (failed; started) in this process while in the block (its DEBUG records of them
    kept out of the test's log)."""
    logger = logging.getLogger("pymongo.serverSelection")
    attempts = Attempts()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(attempts)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield attempts
    finally:
        logger.removeHandler(attempts)
        logger.setLevel(level)
        logger.propagate = propagate
