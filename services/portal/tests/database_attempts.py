"""How many times the code under test asked a MongoDB server that did not answer, as pymongo itself records it:
each failed server selection (a read or a write that found no server within its time), logged by pymongo's
``pymongo.serverSelection`` logger at DEBUG, counted here while the test looks. Not the portal's own account of
its attempts (``sen_portal.portal_db``): the driver's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

FAILED = "Server selection failed"  # pymongo.logger._ServerSelectionStatusMessage.FAILED


class Attempts(logging.Handler):
    """The failed server selections since the last :meth:`take`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        if FAILED in record.getMessage():
            self.failed += 1

    def take(self) -> int:
        """The failed attempts counted since the last call."""
        taken, self.failed = self.failed, 0
        return taken


@contextmanager
def failed_attempts() -> Iterator[Attempts]:
    """Count pymongo's failed server selections in this process while in the block (its DEBUG records of them
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
