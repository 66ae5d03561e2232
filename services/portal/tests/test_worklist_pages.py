# ruff: noqa: F811 - the client fixture imported from test_pages is a parameter by name
"""The hub doctor's worklist, however many consults: teleconsult's ``$worklist`` sorts them (priority,
then due time) and pages them by its ``next`` link's ``_cursor``; the page shows 50, links the next
("Trang sau / Next page") with the status filter kept, says how many consults the list holds, and a
page link that is not one is a readable 400. Flask's test client; teleconsult a fake ``$worklist``
(a keyset over its consults, as teleconsult's) answering 5 to 130 consults."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from services.portal.tests.test_pages import client, sign_in  # noqa: F401 - the fixture by name
from tests.support import csrf_token

RANK = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}
STATES = ("requested", "accepted", "on-hold", "in-progress")


def _consults(n: int) -> list[dict[str, Any]]:
    """``n`` of the hub's consults, priorities, states and request times mixed (not in the ids' order)."""
    out = []
    for i in range(n):
        day, minute = divmod(i * 37 % n, 60)
        out.append({"resourceType": "Task", "id": f"t-{i:03d}", "status": STATES[i % 4],
                    "priority": ("routine", "stat", "urgent", "asap", "routine")[i % 5],
                    "for": {"reference": f"Patient/p{i}"}, "requester": {"reference": "Organization/tyt-my-hiep"},
                    "reasonCode": {"text": "Tăng huyết áp"},
                    "authoredOn": f"2026-11-{1 + day:02d}T08:{minute:02d}:00+07:00",
                    "restriction": {"period": {"end": f"2026-12-{1 + day:02d}T08:{minute:02d}:00+07:00"}}})
    return out


def _key(task: dict[str, Any]) -> tuple[int, str, str]:
    return RANK[task["priority"]], task["authoredOn"], task["id"]


def _in_order(tasks: list[dict[str, Any]]) -> list[str]:
    """The open worklist's order on the page: those the doctor can act on by priority then due time, then those
    waiting for the clinic's answer (on hold) in the same order."""
    return [t["id"] for t in sorted(tasks, key=lambda t: (t["status"] == "on-hold", _key(t)))]


def _cursor(task: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(_key(task)).encode()).decode().rstrip("=")
    return f"{body}.mac0"


def _fake_worklist(monkeypatch, tasks: list[dict[str, Any]]) -> list[dict[str, str]]:
    """teleconsult's ``$worklist``: most urgent first, ``status``, ``_count``, ``total``, a ``next`` link whose
    ``_cursor`` (body.mac) names the page's last row; a cursor it did not make: 400. The queries asked."""
    from sen_portal.web import clinic, doctor
    from sen_portal.web import patients as patient_module
    from sen_portal.web.backend import BackendError

    asked: list[dict[str, str]] = []

    def fhir_get(service, path, params=None, **_kw):
        params = dict(params or {})
        if (service, path) != ("teleconsult", "/fhir/Task/$worklist"):
            return {"resourceType": "Bundle", "type": "searchset", "entry": []}  # the EHR's patients: none
        asked.append(params)
        states = (params.get("status") or ",".join(STATES)).split(",")
        found = sorted((t for t in tasks if t["status"] in states), key=_key)
        start = 0
        if "_cursor" in params:
            body, _, mac = params["_cursor"].partition(".")
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
            except ValueError:
                after = None
            if mac != "mac0" or after is None:
                raise BackendError("refused", "teleconsult", 400, "_cursor is not a page link of this worklist")
            start = next((i for i, t in enumerate(found) if _key(t) > after), len(found))
        count = int(params["_count"])
        page = found[start:start + count]
        links = [{"relation": "next", "url": f"http://tc/fhir/Task/$worklist?_count={count}&_cursor={_cursor(page[-1])}"}
                 ] if start + count < len(found) else []
        return {"resourceType": "Bundle", "type": "searchset", "total": len(found), "link": links,
                "entry": [{"resource": t, "search": {"mode": "match"}} for t in page]}

    for module in (doctor, clinic, patient_module):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    return asked


def _walk(client, url: str = "/worklist") -> tuple[list[str], list[str]]:
    """Every page of the worklist by its "next" links: the consults in the order shown, and each page's HTML."""
    shown, pages = [], []
    while url:
        r = client.get(url)
        assert r.status_code == 200
        page = r.get_data(as_text=True)
        pages.append(page)
        shown += list(dict.fromkeys(re.findall(r'href="/tasks/([a-z0-9-]+)"', page)))
        m = re.search(r'<a rel="next" data-testid="worklist-next" href="([^"]+)"', page)
        url = m.group(1).replace("&amp;", "&") if m else None
        assert len(pages) < 10
    return shown, pages


@pytest.mark.parametrize("n, pages", [(5, 1), (49, 1), (50, 1), (51, 2), (100, 2), (130, 3)])
def test_the_worklist_shows_every_consult_most_urgent_first_page_by_page(client, monkeypatch, n, pages):
    """The page asked teleconsult for 50 and showed them, nothing after: a hub with more open consults hid
    the rest. Now each page links the next: every consult once, in the worklist's order (those waiting for the
    clinic after the others), the count of them all on each page; up to 50 open consults, one read."""
    tasks = _consults(n)
    asked = _fake_worklist(monkeypatch, tasks)
    sign_in(client, "doctor")
    shown, walked = _walk(client)
    assert shown == _in_order(tasks)
    assert len(walked) == pages and all(int(q["_count"]) <= 50 for q in asked)
    if n <= 50:
        assert asked == [{"_count": "50"}]
    for i, page in enumerate(walked, start=1):
        assert f'data-testid="worklist-total">Danh sách có {n} ca hội chẩn</p>' in page
        if pages > 1:
            assert f'data-testid="worklist-page">Trang {i}</span>' in page
            assert ("Trang đầu" in page) == (i > 1)
        else:
            assert 'data-testid="worklist-page"' not in page
    assert "Trang sau" in walked[0] if pages > 1 else "Trang sau" not in walked[0]


def test_the_status_filter_is_kept_across_the_pages_and_the_refresh(client, monkeypatch):
    tasks = _consults(130)
    asked = _fake_worklist(monkeypatch, tasks)
    sign_in(client, "doctor")
    shown, walked = _walk(client, "/worklist?status=accepted")
    accepted = [t["id"] for t in sorted(tasks, key=_key) if t["status"] == "accepted"]
    assert shown == accepted and len(walked) == 1  # 33 accepted: one page
    tasks += [{**t, "id": f"a-{t['id']}", "status": "accepted"} for t in tasks if t["status"] == "requested"]
    asked.clear()
    shown, walked = _walk(client, "/worklist?status=accepted")
    want = [t["id"] for t in sorted(tasks, key=_key) if t["status"] == "accepted"]
    assert len(want) == 66 and len(walked) == 2
    assert shown == want
    assert all(q.get("status") == "accepted" for q in asked) and len(asked) == 2
    assert 'data-testid="worklist-total">Danh sách có 66 ca hội chẩn</p>' in walked[1]
    second = walked[1]
    first_link = re.search(r'<nav class="pager"[^>]*>.*?<a href="([^"]+)">Trang đầu</a>', second, re.S)
    assert first_link and first_link.group(1) == "/worklist?status=accepted"
    # the refresh every 30 s reloads this page (its cursor and number, the filter), not the first
    refresh = re.search(r'hx-get="([^"]+)" hx-trigger="every 30s"', second).group(1).replace("&amp;", "&")
    assert "status=accepted" in refresh and "after=" in refresh and "page=2" in refresh
    asked.clear()
    part = client.get(refresh, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert asked[0].get("status") == "accepted" and "_cursor" in asked[0]
    assert list(dict.fromkeys(re.findall(r'href="/tasks/([a-z0-9-]+)"', part))) == \
        list(dict.fromkeys(re.findall(r'href="/tasks/([a-z0-9-]+)"', second)))
    assert 'data-testid="worklist-page">Trang 2</span>' in part


def test_a_bad_page_link_is_a_readable_400(client, monkeypatch):
    """A page link typed wrong, cut, or made for another list: "start again from the first page", in
    Vietnamese (English one click away), a 400 with a link to the first page, never a 500."""
    _fake_worklist(monkeypatch, _consults(60))
    sign_in(client, "doctor")
    for bad in ("x-<script>", "abc", "a" * 3000 + ".m", "e30.other-mac", "%ZZ.mac0"):
        r = client.get("/worklist", query_string={"after": bad, "page": "x", "status": "accepted"})
        page = r.get_data(as_text=True)
        assert r.status_code == 400, bad
        assert "Trang này của danh sách không còn dùng được. Hãy bắt đầu lại từ trang đầu." in page
        assert "<script>" not in page and "Traceback" not in page
    token = csrf_token(client.get("/worklist").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/worklist", "csrf_token": token})
    r = client.get("/worklist?after=abc")
    assert r.status_code == 400 and "This page of the list is no longer valid" in r.get_data(as_text=True)
    page = client.get("/worklist").get_data(as_text=True)
    assert 'data-testid="worklist-total">60 consults in the list</p>' in page and "Next page" in page


def test_a_page_after_the_last_consult_links_the_first(client, monkeypatch):
    """Consults taken off the list between two pages: the next page may hold none; it says so and links the
    first page, filter kept."""
    tasks = _consults(60)
    _fake_worklist(monkeypatch, tasks)
    sign_in(client, "doctor")
    page = client.get("/worklist").get_data(as_text=True)
    nxt = re.search(r'data-testid="worklist-next" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    first = set(_in_order(tasks)[:50])
    tasks[:] = [t for t in tasks if t["id"] in first]  # the ten of the second page were completed meanwhile
    page = client.get(nxt).get_data(as_text=True)
    assert "Không còn ca hội chẩn nào nữa." in page and 'href="/worklist">Trang đầu</a>' in page
    assert 'data-testid="worklist-total">Danh sách có 50 ca hội chẩn</p>' in page


# ------------------------------------------------------------------ specialty and facility (review 7)

SCT = "http://snomed.info/sct"
CARDIO, ENDO = "394579002", "394583002"
CLINICS = ("tyt-my-hiep", "ttyt-thap-muoi")


def _of_two_clinics_and_specialties(n: int) -> list[dict[str, Any]]:
    """``n`` consults from two clinics, each for one of two specialties (a quarter of them each pair)."""
    tasks = _consults(n)
    for i, t in enumerate(tasks):
        t["requester"] = {"reference": f"Organization/{CLINICS[i % 2]}"}
        t["performerType"] = [{"coding": [{"system": SCT, "code": (CARDIO, ENDO)[i // 2 % 2]}]}]
    return tasks


def _fake_hub(monkeypatch, tasks: list[dict[str, Any]]) -> list[dict[str, str]]:
    """teleconsult's ``$worklist`` (:func:`_fake_worklist`) narrowed as teleconsult narrows it: ``specialty`` (a
    consult's performerType code), ``facility`` (its requester); the EHR's directory: the hub's doctors'
    roles (two specialties) and the province's Organizations (the health department gives no care)."""
    from sen_portal.web import clinic, directory, doctor

    def org(oid: str, name: str, kind: str = "prov") -> dict[str, Any]:
        return {"resourceType": "Organization", "id": oid, "name": name,
                "type": [{"coding": [{"code": kind}]}], "address": [{"district": "Huyện Cao Lãnh"}]}

    ehr = {"/fhir/PractitionerRole": [
        {"resourceType": "PractitionerRole", "id": f"r-{code}", "practitioner": {"reference": f"Practitioner/{pid}"},
         "specialty": [{"coding": [{"system": SCT, "code": code}], "text": text}]}
        for pid, code, text in (("bs-an", CARDIO, "Tim mạch"), ("bs-bich", ENDO, "Nội tiết"))],
        "/fhir/Organization": [org("tyt-my-hiep", "Trạm Y tế xã Mỹ Hiệp"),
                               org("ttyt-thap-muoi", "Trung tâm Y tế huyện Tháp Mười"),
                               org("bvdk-dong-thap", "Bệnh viện Đa khoa Đồng Tháp"),
                               org("so-y-te-dong-thap", "Sở Y tế Đồng Tháp", "govt")]}
    wanted = {"specialty": lambda t, v: t["performerType"][0]["coding"][0]["code"] == v,
              "facility": lambda t, v: t["requester"]["reference"] == f"Organization/{v}"}
    everything = list(tasks)
    asked = _fake_worklist(monkeypatch, tasks)
    worklist = doctor.fhir_get

    def fhir_get(service, path, params=None, **kw):
        if service == "ehr" and path in ehr:
            return {"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": r} for r in ehr[path]]}
        if path == "/fhir/Task/$worklist":
            tasks[:] = [t for t in everything if all(f(t, params[k]) for k, f in wanted.items() if k in params)]
        return worklist(service, path, params, **kw)

    for module in (doctor, clinic, directory):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    return asked


def test_the_worklist_filters_by_specialty_and_facility_by_name_kept_across_the_pages(client, monkeypatch):
    """The worklist filtered by status only, though the doctors' worklist is "filterable by specialty, facility
    and status" (teleconsult's ``$worklist`` takes all three). Now two selects, by name (never a code): the hub's
    doctors' specialties and the province's facilities; the choice goes to teleconsult and is kept on the next
    page's link and the refresh."""
    tasks = _of_two_clinics_and_specialties(260)
    asked = _fake_hub(monkeypatch, tasks)
    sign_in(client, "doctor")
    page = client.get("/worklist").get_data(as_text=True)
    specialty = page[page.index('data-testid="worklist-specialty"'):].split("</select>")[0]
    facility = page[page.index('data-testid="worklist-facility"'):].split("</select>")[0]
    assert f'<option value="{CARDIO}">Tim mạch</option>' in specialty and f'value="{ENDO}">Nội tiết<' in specialty
    assert "Mọi chuyên khoa" in specialty and ">394579002<" not in specialty
    assert 'value="tyt-my-hiep">Trạm Y tế xã Mỹ Hiệp<' in facility and "Trung tâm Y tế huyện Tháp Mười" in facility
    assert "Sở Y tế" not in facility and "Mọi cơ sở" in facility  # the health department takes no consults
    asked.clear()
    shown, walked = _walk(client, f"/worklist?specialty={CARDIO}&facility=tyt-my-hiep&status=requested")
    want = [t["id"] for t in sorted(tasks, key=_key) if t["status"] == "requested"]
    assert {t["requester"]["reference"] for t in tasks} == {"Organization/tyt-my-hiep"}
    assert len(walked) == 2 and shown == want and len(want) == 65  # the fake narrowed ``tasks`` as asked
    assert all(q.get("specialty") == CARDIO and q.get("facility") == "tyt-my-hiep" and q.get("status") == "requested"
               for q in asked)
    asked.clear()
    shown, walked = _walk(client, f"/worklist?specialty={ENDO}&facility=tyt-my-hiep")
    assert len(walked) == 2 and len(shown) == 65 and shown == _in_order(tasks)
    assert {t["requester"]["reference"] for t in tasks} == {"Organization/tyt-my-hiep"}
    assert {t["performerType"][0]["coding"][0]["code"] for t in tasks} == {ENDO}
    assert asked and all(q.get("specialty") == ENDO and q.get("facility") == "tyt-my-hiep" for q in asked)
    for second in walked[1:]:
        assert f'<option value="{ENDO}" selected>Nội tiết</option>' in second
        assert '<option value="tyt-my-hiep" selected>Trạm Y tế xã Mỹ Hiệp</option>' in second
        refresh = re.search(r'hx-get="([^"]+)" hx-trigger="every 30s"', second).group(1).replace("&amp;", "&")
        assert f"specialty={ENDO}" in refresh and "facility=tyt-my-hiep" in refresh and "after=" in refresh
        first = re.search(r'<nav class="pager"[^>]*>.*?<a href="([^"]+)">Trang đầu</a>', second, re.S).group(1)
        assert f"specialty={ENDO}" in first and "facility=tyt-my-hiep" in first
    token = csrf_token(walked[0])
    client.post("/language", data={"lang": "en", "next": "/worklist", "csrf_token": token})
    page = client.get("/worklist").get_data(as_text=True)
    assert f'<option value="{CARDIO}">Cardiology</option>' in page and "Every specialty" in page


def test_a_specialty_or_facility_not_of_the_choices_is_refused_readably(client, monkeypatch):
    asked = _fake_hub(monkeypatch, _of_two_clinics_and_specialties(8))
    sign_in(client, "doctor")
    for query, said in (("specialty=nope", "Chuyên khoa trong đường dẫn không phải"),
                        ("specialty=<b>x</b>", "Chuyên khoa trong đường dẫn không phải"),
                        ("facility=bv-khac", "Cơ sở trong đường dẫn không phải cơ sở nào của tỉnh"),
                        ("facility=so-y-te-dong-thap", "Cơ sở trong đường dẫn không phải cơ sở nào của tỉnh")):
        r = client.get(f"/worklist?{query}")
        page = r.get_data(as_text=True)
        assert r.status_code == 400 and said in page, query
        assert "<b>x</b>" not in page and "Traceback" not in page
    assert asked == []  # never asked of teleconsult: not an empty list for a value the doctor cannot have meant
    assert client.get("/worklist?facility=Organization/tyt-my-hiep").status_code == 200


def test_the_hubs_specialties_are_read_once_not_at_every_load(client, monkeypatch):
    """The specialty filter's choices (the hub's doctors' PractitionerRoles) were asked of the EHR at every load,
    every next page and every 30 s refresh of the worklist (a benchmarked page: one more EHR round trip each):
    now the directory's (directory.hub_specialties), kept ten minutes per hub as the facilities' names are."""
    from sen_portal.web import directory

    _fake_hub(monkeypatch, _of_two_clinics_and_specialties(8))
    hub = directory.fhir_get
    roles: list[dict[str, str]] = []

    def counting(service, path, params=None, **kw):
        if path == "/fhir/PractitionerRole":
            roles.append(dict(params or {}))
        return hub(service, path, params, **kw)

    monkeypatch.setattr(directory, "fhir_get", counting)
    sign_in(client, "doctor")
    for url, headers in (("/worklist", {}), ("/worklist", {"HX-Request": "true"}),
                         (f"/worklist?specialty={ENDO}", {}), (f"/worklist?specialty={CARDIO}", {"HX-Request": "true"}),
                         ("/worklist?specialty=nope", {})):
        r = client.get(url, headers=headers)
        assert r.status_code == (400 if "nope" in url else 200), url
    page = client.get("/worklist").get_data(as_text=True)
    assert f'<option value="{CARDIO}">Tim mạch</option>' in page and f'value="{ENDO}">Nội tiết<' in page
    assert [r["organization"] for r in roles] == ["Organization/bvdk-dong-thap"]  # once, the hub's own
    monkeypatch.setattr(directory, "_kept", {})  # ten minutes on: read again
    assert client.get("/worklist").status_code == 200 and len(roles) == 2
