"""Billing's index step drops the indexes an earlier version declared and no query uses any more
(``sen_billing.indexes.RETIRED``): each one cost every insert into its collection and every update of it
(the relay's emptying of a payment's outbox rewrites the whole row on FerretDB, every index with it)."""

from __future__ import annotations

from typing import Any

import pytest
from sen_billing import indexes
from sen_shared import mongo

pytestmark = pytest.mark.integration


def _names(db: Any, coll: str) -> set[str]:
    return {ix["name"] for ix in db[coll].list_indexes()}


def test_the_index_step_drops_the_retired_payment_indexes_and_keeps_the_declared_ones(fresh_db: Any) -> None:
    mongo.ensure_indexes(fresh_db, [*indexes.INDEXES, mongo.Index("payments", (("matched", 1),)),
                                    mongo.Index("payments", (("facility", 1),))])  # as an older version left them
    assert {"matched_1", "facility_1"} <= _names(fresh_db, "payments")
    assert indexes.drop_retired(fresh_db) == "retired indexes dropped: payments.matched_1, payments.facility_1"
    assert not {"matched_1", "facility_1"} & _names(fresh_db, "payments")
    assert not mongo.missing_indexes(fresh_db, indexes.INDEXES)  # every declared one still there
    assert indexes.drop_retired(fresh_db) == "retired indexes dropped: none"  # again: nothing to do


def test_no_declared_index_is_a_retired_one() -> None:
    declared = {(ix.collection, ix.model().document["name"]) for ix in indexes.INDEXES}
    assert not declared & set(indexes.RETIRED)
