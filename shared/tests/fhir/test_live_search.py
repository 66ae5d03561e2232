"""Searches against the live FerretDB (or MongoDB): the filters must be right on the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sen_shared.fhir.search import index_fields, parse_search
from sen_shared.fhir.search.buckets import bucket_fields
from sen_shared.fhir.search.executor import search

pytestmark = pytest.mark.integration

FAMILIES = ["Nguyễn", "Trần", "Lê", "Phạm", "Đặng", "Huỳnh", "Võ"]
CITIES = ["Cao Lãnh", "Sa Đéc", "Hồng Ngự", "Long Xuyên"]


def store(db, resource: dict, *, deleted: bool = False, lu: datetime | None = None) -> None:
    doc = {"_id": resource["id"], "v": 1, "lu": lu or datetime(2024, 1, 1, tzinfo=UTC), "del": deleted,
           "res": resource, **bucket_fields(resource["id"]), **index_fields(resource)}
    db[resource["resourceType"]].replace_one({"_id": resource["id"]}, doc, upsert=True)


@pytest.fixture(scope="module")
def seeded(db):
    for i in range(35):
        store(db, {
            "resourceType": "Patient", "id": f"p{i:02d}",
            "identifier": [{"system": "urn:vn:cccd", "value": f"0010990{i:05d}"}],
            "name": [{"family": FAMILIES[i % len(FAMILIES)], "given": ["Văn" if i % 2 else "Thị", f"An{i}"]}],
            "gender": "male" if i % 2 else "female",
            "birthDate": f"{1950 + i}-0{1 + i % 9}-1{i % 10}",
            "address": [{"city": CITIES[i % len(CITIES)]}],
            "managingOrganization": {"reference": "Organization/org1" if i < 10 else "Organization/org2"},
        }, deleted=(i == 34), lu=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=i))
    store(db, {"resourceType": "Organization", "id": "org1", "name": "Bệnh viện Đa khoa Đồng Tháp"})
    store(db, {"resourceType": "Organization", "id": "org2", "name": "Trạm y tế Mỹ Trà"})
    for i in range(15):
        store(db, {
            "resourceType": "Observation", "id": f"o{i:02d}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6" if i % 3 else "1234-5"}]},
            "subject": {"reference": f"Patient/p{i % 5:02d}"},
            "effectiveDateTime": f"2024-03-{1 + i:02d}T08:00:00+07:00",
            "valueQuantity": {"value": 100 + 5 * i, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        })
    return db


def ids(db, rtype, params, **kw):
    req = parse_search(rtype, params)
    req.count = 1000
    return sorted(search(db, req, **kw).ids)


def test_string_vietnamese(seeded):
    nguyen = ids(seeded, "Patient", [("name", "nguyen")])
    assert nguyen == ["p00", "p07", "p14", "p21", "p28"]
    assert ids(seeded, "Patient", [("family", "Nguyễn")]) == nguyen
    assert ids(seeded, "Patient", [("name", "dang")]) == ["p04", "p11", "p18", "p25", "p32"]
    assert ids(seeded, "Patient", [("name", "đặ")]) == ["p04", "p11", "p18", "p25", "p32"]
    assert ids(seeded, "Patient", [("name", "nguyen van")]) == ["p07", "p21"]
    assert ids(seeded, "Patient", [("name:exact", "Nguyễn")]) == nguyen
    assert ids(seeded, "Patient", [("name:exact", "nguyen")]) == []
    assert ids(seeded, "Patient", [("name:contains", "uye")]) == nguyen


def test_name_words_in_any_order_each_a_prefix(seeded):
    """A name search takes every word as a prefix of some word of the name, in any order, none
    skipped ("tran hong" finds "Trần Thị Hồng Ánh"); an address keeps its words in order (below)."""
    assert ids(seeded, "Patient", [("name", "van nguyen")]) == ["p07", "p21"]
    assert ids(seeded, "Patient", [("name", "NGUYEN an7")]) == ["p07"]
    assert ids(seeded, "Patient", [("name", "an2 ng")]) == ["p21", "p28"]  # prefixes: An21, An28
    assert ids(seeded, "Patient", [("name", "an21 thi")]) == []  # every word must match
    assert ids(seeded, "Patient", [("name", "trần   an8")]) == ["p08"]
    assert ids(seeded, "Patient", [("family", "nguyen van")]) == []  # "Văn" is a given name, not a family
    assert ids(seeded, "Patient", [("given", "an7 van")]) == ["p07"]
    long_word = "nguyen" + "x" * 20  # longer than the stored prefixes: checked on the whole name
    assert ids(seeded, "Patient", [("name", f"van {long_word}")]) == []


def test_address_city_multiword(seeded):
    cao_lanh = ids(seeded, "Patient", [("address-city", "cao lanh")])
    assert cao_lanh == [f"p{i:02d}" for i in range(0, 34, 4)]
    assert ids(seeded, "Patient", [("address-city", "lanh cao")]) == []
    assert ids(seeded, "Patient", [("address-city", "Cao Lãnh"), ("gender", "female")]) == cao_lanh


def test_deleted_are_invisible(seeded):
    assert "p34" not in ids(seeded, "Patient", [])
    assert len(ids(seeded, "Patient", [])) == 34


def test_exact_matches_whole_original_values_in_either_stored_form(db):
    """``_x`` is one string of originals between separators; an array from an earlier version
    still matches; a part of a value, another case or a value spanning two originals does not."""
    new = {"resourceType": "Practitioner", "id": "x-new", "name": [{"family": "Lê (Thị) Ánh", "given": ["Mai"]}]}
    old = {**new, "id": "x-old"}
    store(db, new)
    store(db, old)
    db["Practitioner"].update_one({"_id": "x-old"}, {"$set": {"sp_family_x": ["Lê (Thị) Ánh"],
                                                             "sp_name_x": ["Lê (Thị) Ánh", "Mai"]}})
    assert ids(db, "Practitioner", [("family:exact", "Lê (Thị) Ánh")]) == ["x-new", "x-old"]
    assert ids(db, "Practitioner", [("name:exact", "Mai")]) == ["x-new", "x-old"]
    assert ids(db, "Practitioner", [("family:exact", "Lê (Thị)")]) == []
    assert ids(db, "Practitioner", [("family:exact", "lê (thị) ánh")]) == []
    assert ids(db, "Practitioner", [("name:exact", "Ánh\x1fMai")]) == []


def test_identifier_exact(seeded):
    assert ids(seeded, "Patient", [("identifier", "001099000012")]) == ["p12"]
    assert ids(seeded, "Patient", [("identifier", "urn:vn:cccd|001099000012")]) == ["p12"]
    assert ids(seeded, "Patient", [("identifier", "other|001099000012")]) == []
    assert ids(seeded, "Patient", [("identifier", "00109900001")]) == []
    assert ids(seeded, "Patient", [("_id", "p01,p02")]) == ["p01", "p02"]
    assert ids(seeded, "Patient", [("gender:not", "male"), ("_id", "p01,p02")]) == ["p02"]
    assert ids(seeded, "Patient", [("email:missing", "true"), ("_id", "p01")]) == ["p01"]
    assert ids(seeded, "Patient", [("gender:missing", "true")]) == []


def test_missing_asks_every_field_a_parameter_writes(seeded):
    """A token with only a text, a reference with only an identifier count as present; an
    absent element is missing."""
    store(seeded, {"resourceType": "Condition", "id": "c-text", "code": {"text": "sốt xuất huyết"},
                   "subject": {"identifier": {"system": "urn:vn:cccd", "value": "001099000001"}}})
    store(seeded, {"resourceType": "Condition", "id": "c-code", "subject": {"reference": "Patient/p01"},
                   "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38362002"}]}})
    store(seeded, {"resourceType": "Condition", "id": "c-none", "subject": {"reference": "Patient/p02"}})
    assert ids(seeded, "Condition", [("code:missing", "false")]) == ["c-code", "c-text"]
    assert ids(seeded, "Condition", [("code:missing", "true")]) == ["c-none"]
    assert ids(seeded, "Condition", [("subject:missing", "false")]) == ["c-code", "c-none", "c-text"]
    assert ids(seeded, "Condition", [("onset-date:missing", "true")]) == ["c-code", "c-none", "c-text"]


def test_patient_and_date_range(seeded):
    got = ids(seeded, "Observation", [("patient", "p01"), ("date", "ge2024-03-01"), ("date", "lt2024-03-10")])
    assert got == ["o01", "o06"]
    got = ids(seeded, "Observation", [("subject", "Patient/p01"), ("date", "2024-03")])
    assert got == ["o01", "o06", "o11"]


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-03-05", ["o04"]),
    ("eq2024-03-05", ["o04"]),
    ("ne2024-03-05", [f"o{i:02d}" for i in range(15) if i != 4]),
    ("gt2024-03-12", ["o12", "o13", "o14"]),
    ("sa2024-03-12", ["o12", "o13", "o14"]),
    ("ge2024-03-13", ["o12", "o13", "o14"]),
    ("lt2024-03-03", ["o00", "o01"]),
    ("eb2024-03-03", ["o00", "o01"]),
    ("le2024-03-02", ["o00", "o01"]),
    ("eq2024-03-05T08:00:00+07:00", ["o04"]),
    ("eq2024-03-05T01:00:00Z", ["o04"]),
    ("gt2024-03-05T08:00:00+07:00", [f"o{i:02d}" for i in range(5, 15)]),
    ("2024-02", []),
])
def test_date_prefixes(seeded, value, expected):
    assert ids(seeded, "Observation", [("date", value)]) == expected


def test_date_approximately(seeded):
    # "now" is far from 2024-03, so ±10% of the gap covers the whole month
    assert len(ids(seeded, "Observation", [("date", "ap2024-03-08")])) == 15


def test_birthdate_precision(seeded):
    assert ids(seeded, "Patient", [("birthdate", "1960")]) == ["p10"]
    assert ids(seeded, "Patient", [("birthdate", "lt1952-01-01")]) == ["p00", "p01"]


def test_quantity_and_composite(seeded):
    assert ids(seeded, "Observation", [("value-quantity", "gt160")]) == ["o13", "o14"]
    assert ids(seeded, "Observation", [("value-quantity", "ge160|http://unitsofmeasure.org|mm[Hg]")]) == \
        ["o12", "o13", "o14"]
    assert ids(seeded, "Observation", [("value-quantity", "160||mg")]) == []
    assert ids(seeded, "Observation", [("value-quantity", "ap100")]) == ["o00", "o01", "o02"]
    got = ids(seeded, "Observation", [("code-value-quantity", "http://loinc.org|1234-5$gt140")])
    assert got == ["o09", "o12"]


def test_chain_and_has(seeded):
    assert ids(seeded, "Observation", [("subject:Patient.name", "dang")]) == ["o04", "o09", "o14"]
    assert ids(seeded, "Observation", [("patient.identifier", "urn:vn:cccd|001099000001")]) == \
        ["o01", "o06", "o11"]
    assert ids(seeded, "Patient", [("_has:Observation:patient:code", "1234-5")]) == ["p00", "p01", "p02", "p03", "p04"]
    assert ids(seeded, "Patient", [("_has:Observation:patient:date", "2024-03-04")]) == ["p03"]
    assert ids(seeded, "Patient", [("_has:Observation:patient:date", "2023")]) == []
    assert ids(seeded, "Patient", [("organization.name", "tram y te")])[:2] == ["p10", "p11"]


def test_includes(seeded):
    req = parse_search("Observation", [("_id", "o01"), ("_include", "Observation:patient"),
                                       ("_include:iterate", "Patient:organization")])
    res = search(seeded, req)
    assert sorted(d["_id"] for d in res.included) == ["org1", "p01"]
    req = parse_search("Patient", [("_id", "p01"), ("_revinclude", "Observation:subject")])
    assert sorted(d["_id"] for d in search(seeded, req).included) == ["o01", "o06", "o11"]


def test_sort_by_two_keys(seeded):
    req = parse_search("Patient", [("_sort", "family,-birthdate"), ("_count", "100")])
    docs = search(seeded, req).docs
    keys = [(d["sp_family_s"], d["sp_birthdate_s"]) for d in docs]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    for a, b in zip(keys, keys[1:], strict=False):
        if a[0] == b[0]:
            assert a[1] >= b[1]
    assert docs[0]["sp_family_s"] == "dang" and docs[0]["_id"] == "p32"


def test_total(seeded):
    req = parse_search("Patient", [("gender", "male"), ("_count", "3")])
    res = search(seeded, req, count_total=True)
    assert res.total == 17 and len(res.docs) == 3 and res.next_cursor
    assert search(seeded, req).total is None


@pytest.fixture(scope="module")
def many(db):
    coll = db["Encounter"]
    docs = []
    for i in range(250):
        res = {"resourceType": "Encounter", "id": f"e{i:03d}", "status": "finished",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
               "subject": {"reference": f"Patient/p{i % 7:02d}"}}
        if i % 5:  # every fifth has no period: nulls must page correctly too
            res["period"] = {"start": f"2024-0{1 + i % 6}-{1 + i % 20:02d}"}
        docs.append({"_id": res["id"], "v": 1, "lu": datetime(2024, 1, 1, tzinfo=UTC), "del": False, "res": res,
                     **bucket_fields(res["id"]), **index_fields(res)})
    coll.insert_many(docs)
    return db


@pytest.mark.parametrize("sort", [None, "date", "-date", "subject,-date", "-_lastUpdated,subject"])
def test_paging_returns_each_exactly_once(many, sort):
    params = [("class", "VR"), ("_count", "7")] + ([("_sort", sort)] if sort else [])
    req = parse_search("Encounter", params)
    seen: list[str] = []
    pages = 0
    while True:
        res = search(many, req)
        seen += res.ids
        pages += 1
        assert len(res.ids) <= 7
        if not res.next_cursor:
            break
        req = parse_search("Encounter", params + [("_cursor", res.next_cursor)])
        assert pages < 100
    assert len(seen) == 250 and len(set(seen)) == 250
    assert pages == 36


def test_a_parameter_with_the_same_expression_is_stored_once(seeded):
    from sen_shared.fhir.search.definitions import get_param

    assert get_param("Patient", "phonetic").alias_of == "name" and get_param("Patient", "name").alias_of is None
    doc = seeded["Patient"].find_one({"_id": "p00"})
    assert "sp_name" in doc and not any(k.startswith("sp_phonetic") for k in doc)
    assert ids(seeded, "Patient", [("phonetic", "nguyen")]) == ids(seeded, "Patient", [("name", "nguyen")])
    assert ids(seeded, "Patient", [("phonetic:missing", "false")]) == ids(seeded, "Patient", [("_id:missing", "false")])
    req = parse_search("Patient", [("phonetic", "nguyen"), ("_sort", "-phonetic")])
    assert [d["_id"] for d in search(seeded, req).docs] == [d["_id"] for d in search(
        seeded, parse_search("Patient", [("name", "nguyen"), ("_sort", "-name")])).docs]


def test_system_only_tokens_match_any_code_of_the_system(seeded):
    everyone = ids(seeded, "Patient", [("_id:missing", "false")])
    assert ids(seeded, "Patient", [("identifier", "urn:vn:cccd|")]) == everyone
    assert ids(seeded, "Patient", [("identifier", "urn:vn:cc|")]) == []  # a prefix of the system is not the system
    assert ids(seeded, "Patient", [("identifier:not", "urn:vn:cccd|")]) == []
    assert len(ids(seeded, "Observation", [("code", "http://loinc.org|")])) == 15
    from sen_shared.fhir.search import SearchError

    with pytest.raises(SearchError, match="needs its code"):
        ids(seeded, "Observation", [("code-value-quantity", "http://loinc.org|$gt100")])


def test_parts_of_a_name_narrow_by_the_name_and_check_their_own_strings(seeded):
    nguyen = ids(seeded, "Patient", [("name", "nguyen")])
    assert ids(seeded, "Patient", [("family", "ngu")]) == nguyen
    assert ids(seeded, "Patient", [("family", "van")]) == []  # "Văn" is a given name here, not a family
    assert ids(seeded, "Patient", [("given", "van")]) == ids(seeded, "Patient", [("gender", "male")])
    assert ids(seeded, "Patient", [("address-city", "cao lanh")]) == ids(seeded, "Patient", [("address-city", "Cao")])
    assert ids(seeded, "Patient", [("address-city", "lanh cao")]) == []


def test_audit_events_stored_twice_count_as_stored(db):
    from sen_shared.fhir.audit import Auditor

    auditor = Auditor(db, "ehr")
    docs = [{"_id": f"ae-{i}", "v": 1, "res": {"resourceType": "AuditEvent", "id": f"ae-{i}"}} for i in range(3)]
    auditor._store(docs[:2])
    auditor._store(docs)  # a retry after a lost answer: the first two are there already
    assert sorted(d["_id"] for d in db["AuditEvent"].find({"_id": {"$in": ["ae-0", "ae-1", "ae-2"]}})) == \
        ["ae-0", "ae-1", "ae-2"]


def test_a_few_ids_or_references_are_asked_one_equality_each(seeded):
    """``_id=a,b,c`` and ``subject=Patient/a,Patient/b`` answer as a ``$in`` would, in the same order,
    paged; but no ``$in`` reaches the server (FerretDB scans the whole collection for one)."""
    import pymongo
    from pymongo import monitoring

    class Finds(monitoring.CommandListener):
        def __init__(self) -> None:
            self.filters: list[dict] = []

        def started(self, event) -> None:
            if event.command_name == "find":
                self.filters.append(event.command.get("filter") or {})

        def succeeded(self, event) -> None: ...

        def failed(self, event) -> None: ...

    finds = Finds()
    client = pymongo.MongoClient(seeded.client.address and f"mongodb://{seeded.client.address[0]}:"
                                 f"{seeded.client.address[1]}/", event_listeners=[finds], tz_aware=False)
    try:
        db = client[seeded.name]
        assert ids(db, "Patient", [("_id", "p05,p01,p34,p03,p01")]) == ["p01", "p03", "p05"]  # p34 is deleted
        req = parse_search("Patient", [("_id", "p05,p01,p03,p07"), ("_sort", "-birthdate"), ("_count", "3")])
        page = search(db, req)
        assert page.ids == ["p07", "p05", "p03"] and page.next_cursor
        rest = search(db, parse_search("Patient", [("_id", "p05,p01,p03,p07"), ("_sort", "-birthdate"),
                                                   ("_count", "3"), ("_cursor", page.next_cursor)]))
        assert rest.ids == ["p01"] and rest.next_cursor is None
        obs = ids(db, "Observation", [("subject", "Patient/p01,Patient/p02"), ("code", "8480-6")])
        assert obs == ["o01", "o02", "o07", "o11"]
        assert not any("$in" in repr(f) for f in finds.filters), finds.filters
    finally:
        client.close()


def test_the_merge_of_per_value_answers_orders_values_of_mixed_types_as_mongodb_does():
    """A sort key that holds different types in different documents (null, a number, a text, a
    date) is merged in MongoDB's order of types, never compared across types by Python (a 500)."""
    from datetime import UTC, datetime

    from sen_shared.fhir.search.executor import _bson_order

    values = [datetime(2026, 1, 1, tzinfo=UTC), "b", {"x": 1}, None, 2.5, [1], 3, True, "a"]
    assert sorted(values, key=_bson_order) == [None, 2.5, 3, "a", "b", {"x": 1}, [1], True,
                                               datetime(2026, 1, 1, tzinfo=UTC)]
