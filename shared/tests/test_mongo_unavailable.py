"""``mongo.unavailable``: which database errors mean "out of reach, try again" (503, a held event)."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)
from sen_shared.mongo import unavailable

# FerretDB 1.24.2's answers while the PostgreSQL under it restarted (tests/integration/test_database_restart.py)
AWAY = ["[msg_insert.go:168 handler.(*Handler).MsgInsert] failed to connect to `user=postgres database=ferretdb`:"
        "\n\t127.0.0.1:36311 (127.0.0.1): dial error: dial tcp 127.0.0.1:36311: connect: connection refused",
        "[update.go:114 common.UpdateDocument] FATAL: terminating connection due to administrator command "
        "(SQLSTATE 57P01)",
        "[msg_insert.go:168 handler.(*Handler).MsgInsert] unexpected EOF",
        "read tcp 127.0.0.1:60812->127.0.0.1:36311: read: connection reset by peer"]


@pytest.mark.parametrize("message", AWAY)
def test_ferretdb_s_internal_error_with_its_postgresql_away_is_unavailable(message: str) -> None:
    assert unavailable(OperationFailure(message, 1, {"ok": 0.0, "errmsg": message, "code": 1}))


@pytest.mark.parametrize("err", [AutoReconnect("closed"), NotPrimaryError("stepping down"),
                                 ServerSelectionTimeoutError("no server"), ExecutionTimeout("slow", 50)])
def test_lost_connections_and_timeouts_are_unavailable(err: Exception) -> None:
    assert unavailable(err)


def test_a_batch_whose_writes_met_the_postgresql_away_is_unavailable() -> None:
    assert unavailable(BulkWriteError({"writeErrors": [{"index": 0, "code": 1, "errmsg": AWAY[0]}]}))


@pytest.mark.parametrize("err", [
    DuplicateKeyError("E11000 duplicate key", 11000),
    OperationFailure("[msg_find.go:90] invalid filter: unknown operator $nope", 2),
    OperationFailure("some internal error that is a bug", 1),
    BulkWriteError({"writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"}]}),
    ValueError("not a database error")])
def test_command_errors_and_bugs_are_not(err: Exception) -> None:
    assert not unavailable(err)
