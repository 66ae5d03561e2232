"""The default search order walks id buckets: a broad search decodes about one page, pages stay exact."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sen_shared.fhir.search import index_fields, parse_search
from sen_shared.fhir.search.buckets import BUCKETS, bucket, bucket_fields, plan_step
from sen_shared.fhir.search.executor import search

DENSE, SPARSE = 600, 6


def test_buckets_are_even_and_stable() -> None:
    counts: dict[str, int] = {}
    for i in range(25_600):
        counts[bucket(f"id-{i}")] = counts.get(bucket(f"id-{i}"), 0) + 1
    assert len(counts) == BUCKETS
    assert max(counts.values()) < 3 * 100  # about 100 each
    b = bucket("abc")
    assert b == bucket("abc") and bucket_fields("abc") == {"b2": b, "b4": f"{int(b, 16) // 4:02x}", "b1": b[0]}


def test_plan_adapts_to_density() -> None:
    # first step: one fine bucket (the density is unknown, assume dense)
    assert plan_step(0, 21, 0, 0) == ({"b2": "00"}, [], 1)
    # dense so far (5 a bucket): keep to one bucket a step
    assert plan_step(3, 11, 15, 3) == ({"b2": "03"}, [], 1)
    # nothing in the first bucket: read the rest of its coarse bucket
    eq, conds, span = plan_step(1, 21, 0, 1)
    assert eq == {"b1": "0"} and conds == [{"b2": {"$gte": "01"}}] and span == 15
    # one match in the first bucket is too small a sample for sixteen: the rest of its group of four
    assert plan_step(1, 20, 1, 1) == ({"b4": "00"}, [{"b2": {"$gte": "01"}}], 3)
    # about 2.75 a bucket: a group of four at a time (about 11 candidates)
    assert plan_step(4, 21, 5, 2) == ({"b4": "01"}, [], 4)
    assert plan_step(6, 21, 5, 2) == ({"b4": "01"}, [{"b2": {"$gte": "06"}}], 2)
    # sparse over 32 buckets: finish in one query
    assert plan_step(32, 20, 1, 32) == ({}, [{"b2": {"$gte": "20"}}], BUCKETS - 32)


def _fake_find(per_bucket: list[int], decoded: list[int]):
    """A step over synthetic matches (``per_bucket[i]`` in bucket i), counting what FerretDB decodes:
    every match of the pushed-down group, also those a ``$gte`` condition then drops."""
    groups = {"b1": 16, "b4": 4, "b2": 1}

    def find(equalities, conds, limit):
        if equalities:
            (field, value), = equalities.items()
            size = groups[field]
            lo = int(value, 16) * size
            hi = lo + size
        else:
            lo, hi = 0, BUCKETS
        decoded.append(sum(per_bucket[lo:hi]))
        start = int(conds[0]["b2"]["$gte"], 16) if conds else lo
        rows = [{"b2": f"{b:02x}"} for b in range(start, hi) for _ in range(per_bucket[b])]
        return rows[:limit]
    return find


def test_a_walk_learns_the_density_from_a_step_that_filled_the_page() -> None:
    from sen_shared.fhir.search import buckets

    buckets._density.clear()
    per_bucket = [1] + [3] * (BUCKETS - 1)  # a first bucket that undersells the filter
    decoded: list[int] = []
    docs = buckets.walk(_fake_find(per_bucket, decoded), 21, density_key="k")
    assert len(docs) == 21
    assert sum(decoded) <= 21 + 8 + 3, decoded  # not the 46 of a group of sixteen after the probe
    assert buckets._density["k"] >= 2.5  # what the buckets up to the page's last match held
    decoded.clear()
    buckets.walk(_fake_find(per_bucket, decoded), 21, density_key="k")
    assert sum(decoded) <= 21 + 8 + 3 and len(decoded) <= 3, decoded


class CountingCollection:
    """A pymongo collection that counts its finds and their candidates: every document a find's
    filter matches, which FerretDB decodes before it sorts and limits."""

    def __init__(self, coll) -> None:
        self.coll, self.candidates, self.queries = coll, 0, 0

    def __getattr__(self, name):
        return getattr(self.coll, name)

    def find(self, flt, *args, **kwargs):
        cursor = self.coll.find(flt, *args, **kwargs)
        self.queries += 1
        self.candidates += self.coll.count_documents(flt)

        class Counting:
            def sort(self, *a):
                cursor.sort(*a)
                return self

            def limit(self, n):
                cursor.limit(n)
                return self

            def __iter__(self):
                return iter(cursor)
        return Counting()


class CountingDb:
    def __init__(self, db) -> None:
        self.db, self.colls = db, {}

    def __getitem__(self, name):
        return self.colls.setdefault(name, CountingCollection(self.db[name]))


@pytest.fixture(scope="module")
def crowd(db):
    docs = []
    for i in range(DENSE + SPARSE):
        family = "Nguyễn" if i < DENSE else "Khúc"
        res = {"resourceType": "Patient", "id": f"w{i:04d}", "name": [{"family": family, "given": [f"Số{i}"]}]}
        docs.append({"_id": res["id"], "v": 1, "lu": datetime(2024, 1, 1, tzinfo=UTC), "del": False, "res": res,
                     **bucket_fields(res["id"]), **index_fields(res)})
    db["Patient"].insert_many(docs)
    return db


def _pages(db, params: list[tuple[str, str]], count: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Every id in order over all pages, and (candidates decoded, queries) per page."""
    seen: list[str] = []
    costs: list[tuple[int, int]] = []
    cursor = None
    while True:
        req = parse_search("Patient", params)
        req.count, req.cursor = count, cursor
        counting = CountingDb(db)
        page = search(counting, req)
        coll = counting["Patient"]
        costs.append((coll.candidates, coll.queries))
        seen += page.ids
        cursor = page.next_cursor
        if not cursor:
            return seen, costs


@pytest.mark.integration
def test_dense_search_decodes_about_one_page_and_pages_exactly(crowd) -> None:
    seen, costs = _pages(crowd, [("name", "nguyen")], 20)
    expected = sorted((f"w{i:04d}" for i in range(DENSE)), key=lambda rid: (bucket(rid), rid))
    assert seen == expected  # each exactly once, in (bucket, id) order
    for candidates, _queries in costs:
        # the page (+1 to know there is a next), the walk's slack, at most one bucket over; not 600
        assert candidates <= 2 * 21 + 8, costs


@pytest.mark.integration
def test_sparse_search_takes_few_queries(crowd) -> None:
    seen, costs = _pages(crowd, [("name", "khuc")], 20)
    assert sorted(seen) == [f"w{i:04d}" for i in range(DENSE, DENSE + SPARSE)]
    assert len(costs) == 1 and costs[0][1] <= 3


@pytest.mark.integration
def test_explicit_sort_and_selective_searches_use_one_query(crowd) -> None:
    seen, costs = _pages(crowd, [("name", "nguyen"), ("_sort", "-_id")], 50)
    assert seen == sorted((f"w{i:04d}" for i in range(DENSE)), reverse=True)
    assert all(q == 1 for _, q in costs)
    seen, costs = _pages(crowd, [("_id", "w0003")], 20)
    assert seen == ["w0003"] and costs == [(1, 1)]


@pytest.mark.integration
def test_backfill_brings_older_documents_up_to_date(db) -> None:
    from sen_shared.fhir.store import LAYOUT, LAYOUTS_COLLECTION, TYPES_COLLECTION, backfill

    res = {"resourceType": "Practitioner", "id": "old-1", "name": [{"family": "Lương"}]}
    fields = index_fields(res)
    fields["sp_present"] = ["name"]  # with sp_missing: the layout before both
    db["Practitioner"].insert_one({"_id": "old-1", "v": 1, "lu": datetime(2024, 1, 1, tzinfo=UTC), "del": False,
                                   "res": res, "sp_missing": ["email"], **fields})
    db["Practitioner_history"].insert_one({"_id": "old-1/1", "id": "old-1", "v": 1, "del": False, "m": "POST",
                                           "lu": datetime(2024, 1, 1, tzinfo=UTC), "res": res})
    assert backfill(db, ["Practitioner", "Organization"]) == 2
    doc = db["Practitioner"].find_one({"_id": "old-1"})
    assert doc["b2"] == bucket("old-1") and doc["b4"] and "sp_missing" not in doc and "sp_present" not in doc
    assert isinstance(doc["sp_name_x"], str)  # index fields recomputed
    # the body becomes its JSON text, in the history too, and reads back equal
    assert isinstance(doc["res"], str) and json.loads(doc["res"]) == res
    assert json.loads(db["Practitioner_history"].find_one({"_id": "old-1/1"})["res"]) == res
    assert db[TYPES_COLLECTION].find_one({"_id": "Practitioner"}) is not None
    assert backfill(db, ["Practitioner"]) == 0  # idempotent
    page = search(db, parse_search("Practitioner", [("name", "luong")]))
    assert page.ids == ["old-1"] and page.docs[0]["res"] == res
    # a collection brought to this layout is not read again (an old-layout document written
    # afterwards, by an older process, stays until next written: reads take both forms) ...
    assert db[LAYOUTS_COLLECTION].find_one({"_id": "Practitioner"})["layout"] == LAYOUT
    db["Practitioner"].insert_one({"_id": "old-2", "v": 1, "lu": datetime(2024, 1, 1, tzinfo=UTC), "del": False,
                                   "res": {**res, "id": "old-2"}, **index_fields(res)})
    assert backfill(db, ["Practitioner"]) == 0
    assert search(db, parse_search("Practitioner", [("_id", "old-2")])).docs[0]["res"]["id"] == "old-2"
    # ... until the layout it was brought to is an older one
    db[LAYOUTS_COLLECTION].update_one({"_id": "Practitioner"}, {"$set": {"layout": LAYOUT - 1}})
    assert backfill(db, ["Practitioner"]) == 1
    assert isinstance(db["Practitioner"].find_one({"_id": "old-2"})["res"], str)


@pytest.mark.integration
def test_a_cursor_of_another_order_is_refused_not_a_crash(crowd) -> None:
    from sen_shared.fhir.search import SearchError
    from sen_shared.fhir.search.mongo import encode_cursor

    req = parse_search("Patient", [("name", "nguyen")])
    req.cursor = encode_cursor(["ly", "w0001"])  # what a _sort=family page ends with: signed, but not a bucket
    with pytest.raises(SearchError, match="does not belong"):
        search(crowd, req)


@pytest.mark.integration
def test_a_filter_walked_before_starts_with_the_density_it_met(crowd) -> None:
    from sen_shared.fhir.search import buckets

    buckets._density.clear()
    first = CountingDb(crowd)
    search(first, parse_search("Patient", [("name", "nguyen")]))
    again = CountingDb(crowd)
    page = search(again, parse_search("Patient", [("name", "nguyen")]))
    assert len(page.docs) == 20
    assert again["Patient"].queries < first["Patient"].queries  # no probe of one bucket first
    assert again["Patient"].candidates <= 2 * 21 + 8
