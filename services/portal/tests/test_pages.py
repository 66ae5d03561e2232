"""Unit tests of the portal's pages with the Flask test client: no back-end runs, so every call to
another service fails fast (a closed loopback port) and the pages must say so in the user's language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sen_portal.web import formatting, icd10
from sen_portal.web.clinic import search_params
from sen_portal.web.users import DEMO_USERS, check_demo_password

from tests.support import csrf_token, portal_app, shows_alert, stub_invoice_desk


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def sign_in(client, user: str = "clinic", password: str | None = None):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"username": user, "password": password or f"sen-{user}",
                                       "csrf_token": csrf_token(page)})


def test_amounts_are_dong_with_dots():
    assert formatting.vnd(150000) == "150.000\u00a0₫"
    assert formatting.vnd(0) == "0\u00a0₫"
    assert formatting.vnd(-2500) == "-2.500\u00a0₫"
    assert formatting.vnd(None) == "—"


def test_search_picks_cccd_bhyt_or_name():
    assert search_params("087168004512") == {"identifier": "https://fhir.sen.vn/sid/cccd|087168004512"}
    assert search_params("ht2878701234567") == {"identifier": "https://fhir.sen.vn/sid/bhyt|HT2878701234567"}
    assert search_params(" nguyen van a ") == {"name": "nguyen van a"}


def test_icd10_search_without_accents_and_by_code():
    assert [c.code for c in icd10.search("tang huyet ap")][:1] == ["I10"]
    assert icd10.search("E11")[0].code.startswith("E11")
    assert icd10.parse_field("I10 — Tăng huyết áp vô căn (nguyên phát)").code == "I10"
    assert icd10.parse_field("I21.99 nonsense") is None  # no such code: WHO's I21 stops at I21.9


def test_demo_passwords_are_hashed_and_checked():
    assert all(h.startswith("scrypt:") for _, h in DEMO_USERS.values())
    assert check_demo_password("doctor", "sen-doctor").role == "doctor"
    assert check_demo_password("doctor", "wrong") is None
    assert check_demo_password("nobody", "sen-doctor") is None


def test_sign_in_page_is_vietnamese_and_english_one_click_away(client):
    page = client.get("/login").get_data(as_text=True)
    assert '<html lang="vi">' in page and "Đăng nhập" in page and "Tên đăng nhập" in page
    r = client.post("/language", data={"lang": "en", "next": "/login", "csrf_token": csrf_token(page)})
    assert r.status_code == 302
    page = client.get("/login").get_data(as_text=True)
    assert '<html lang="en">' in page and "User name" in page


def test_wrong_password_is_refused_with_a_clear_message(client):
    r = sign_in(client, "clinic", "nope")
    assert r.status_code == 401
    assert "Tên đăng nhập hoặc mật khẩu không đúng." in r.get_data(as_text=True)


def test_every_form_post_needs_the_csrf_token(client):
    r = client.post("/login", data={"username": "clinic", "password": "sen-clinic"})
    assert r.status_code == 400
    assert "Biểu mẫu đã hết hạn" in r.get_data(as_text=True)


def test_signed_in_user_lands_on_the_role_home_and_sees_only_their_role(client):
    r = sign_in(client, "clinic")
    assert r.status_code == 302 and r.headers["Location"].endswith("/patients")
    assert client.get("/dashboard").status_code == 403
    assert client.get("/worklist").status_code == 403
    assert client.get("/invoices").status_code == 403
    nav = client.get("/patients").get_data(as_text=True)
    assert "Bảng điều hành" not in nav and "Danh sách công việc" not in nav


def test_pages_need_a_sign_in_and_sign_out_ends_the_session(client):
    assert client.get("/patients").status_code == 302
    sign_in(client, "doctor")
    page = client.get("/worklist").get_data(as_text=True)  # the teleconsult service is down
    assert "Hiện không kết nối được Dịch vụ hội chẩn từ xa" in page or "không kết nối được" in page
    r = client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert r.status_code == 302
    assert client.get("/worklist").status_code == 302


def test_sign_in_returns_to_the_page_asked_for_with_its_query(client):
    """A link opened signed out (a worklist filter, an invoice to charge) comes back whole after the
    sign-in, query string included; a path without a query stays as it was."""
    from urllib.parse import parse_qs, urlsplit

    wanted = "/worklist?status=requested&priority=stat"
    r = client.get(wanted)
    assert r.status_code == 302
    login_url = r.headers["Location"]
    assert parse_qs(urlsplit(login_url).query)["next"] == [wanted]
    page = client.get(login_url).get_data(as_text=True)
    assert f'value="{wanted.replace("&", "&amp;")}"' in page  # the form carries it to the POST
    r = client.post(login_url, data={"username": "doctor", "password": "sen-doctor", "next": wanted,
                                     "csrf_token": csrf_token(page)})
    assert r.status_code == 302 and r.headers["Location"] == wanted
    with client.session_transaction() as s:
        s.clear()
    assert parse_qs(urlsplit(client.get("/patients").headers["Location"]).query)["next"] == ["/patients"]


def test_a_session_older_than_its_lifetime_has_expired(client):
    sign_in(client, "clinic")
    with client.session_transaction() as s:
        s["signed_in_at"] -= 9 * 3600  # SEN_PORTAL_SESSION_MINUTES defaults to 8 h
    assert client.get("/patients").status_code == 302


def test_search_is_a_post_and_a_down_ehr_keeps_what_was_typed(client):
    sign_in(client, "clinic")
    page = client.get("/patients").get_data(as_text=True)
    assert 'method="post" action="/patients/search"' in page
    r = client.post("/patients/search", data={"q": "nguyen van a", "csrf_token": csrf_token(page)})
    body = r.get_data(as_text=True)
    assert r.status_code == 503  # the EHR did not answer: said on the page, with an outage's status
    assert 'value="nguyen van a"' in body
    assert "Dịch vụ hồ sơ sức khỏe" in body and "Traceback" not in body


def test_register_form_explains_each_error_and_keeps_the_input(client):
    sign_in(client, "clinic")
    page = client.get("/patients/new").get_data(as_text=True)
    r = client.post("/patients/new", data={"family": "Nguyễn", "given": "", "cccd": "123", "birth_date": "2999-01-01",
                                          "csrf_token": csrf_token(page)})
    body = r.get_data(as_text=True)
    assert "Nhập tên đệm và tên." in body
    assert "Số CCCD gồm đúng 12 chữ số." in body
    assert "Ngày sinh không thể ở tương lai." in body
    assert "Chọn giới tính." in body
    assert 'value="Nguyễn"' in body and 'aria-invalid="true"' in body


def test_vendor_assets_are_served_by_the_portal_compressed(client):
    r = client.get("/assets/vendor/htmx.min.js", headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    if r.status_code == 404:
        pytest.skip("front-end packages not installed (make assets)")
    assert r.headers["Content-Encoding"] == "br"
    assert client.get("/assets/vendor/not-a-package.js").status_code == 404


def test_catalog_translates_every_message():
    from babel.messages.pofile import read_po

    po = Path(__file__).resolve().parents[1] / "src/sen_portal/translations/vi/LC_MESSAGES/messages.po"
    with po.open("rb") as f:
        catalog = read_po(f)
    untranslated = [m.id for m in catalog if m.id and not (m.string if isinstance(m.string, str) else all(m.string))]
    assert not untranslated


def test_date_fields_are_dd_mm_yyyy_in_the_users_language(client):
    """Chromium's <input type=date> shows its own build's mm/dd/yyyy whatever the page says; the pages'
    date boxes are text in dd/mm/yyyy (as every date on the pages), hinted in the user's language."""
    sign_in(client, "clinic")
    page = client.get("/patients/new").get_data(as_text=True)
    box = re.search(r"<input[^>]*id=\"birth_date\"[^>]*>", page).group(0)
    assert 'type="text"' in box and 'type="date"' not in box
    assert 'lang="vi"' in box and 'placeholder="ngày/tháng/năm"' in box
    r = client.post("/patients/new", data={"family": "Nguyễn", "given": "", "birth_date": "20/05/1970",
                                          "csrf_token": csrf_token(page)})
    body = r.get_data(as_text=True)
    box = re.search(r"<input[^>]*id=\"birth_date\"[^>]*>", body).group(0)
    assert 'value="20/05/1970"' in box and "aria-invalid" not in box  # read as 20 May 1970, kept as typed
    r = client.post("/patients/new", data={"family": "Nguyễn", "given": "", "birth_date": "05/20/1970",
                                          "csrf_token": csrf_token(page)})  # month 20: not a date in dd/mm/yyyy
    box = re.search(r"<input[^>]*id=\"birth_date\"[^>]*>", r.get_data(as_text=True)).group(0)
    assert 'aria-invalid="true"' in box
    client.post("/language", data={"lang": "en", "csrf_token": csrf_token(page)})
    page = client.get("/patients/new").get_data(as_text=True)
    box = re.search(r"<input[^>]*id=\"birth_date\"[^>]*>", page).group(0)
    assert 'lang="en"' in box and 'placeholder="dd/mm/yyyy"' in box


def test_a_date_field_reads_dd_mm_yyyy_and_iso_and_writes_dd_mm_yyyy(client):
    from datetime import date

    from sen_portal.web.formatting import today
    from sen_portal.web.forms import LeaveForm
    from werkzeug.datastructures import MultiDict

    y = today().year + 1  # leave to come (a leave already over is refused): next January, whenever this runs
    with client.application.test_request_context("/", method="POST"):
        form = LeaveForm(MultiDict({"start": f"4/1/{y}", "end": f"{y}-01-05"}), meta={"csrf": False})
        assert form.validate(), form.errors
        assert (form.start.data, form.end.data) == (date(y, 1, 4), date(y, 1, 5))
        assert LeaveForm(formdata=None, start=date(y, 1, 4), meta={"csrf": False}).start._value() == f"04/01/{y}"


def _week(data: dict[str, object]):
    from sen_portal.web.forms import AvailabilityForm
    from werkzeug.datastructures import MultiDict

    md = MultiDict()
    for k, v in data.items():
        for item in v if isinstance(v, list) else [v]:
            md.add(f"week-{k}", item)
    return AvailabilityForm(md, prefix="week", meta={"csrf": False})


def test_weekly_hours_take_several_windows_a_day_and_refuse_overlaps(client):
    with client.application.test_request_context("/", method="POST"):
        form = _week({"windows-0-days": ["mon", "tue"], "windows-0-start_time": "07:30", "windows-0-end_time": "11:30",
                      "windows-1-days": ["mon", "tue"], "windows-1-start_time": "13:30", "windows-1-end_time": "17:00",
                      "windows-2-start_time": "", "windows-2-end_time": "", "slot_minutes": "30"})
        assert form.validate(), form.errors
        assert [(w.days.data, w.start_time.data, w.end_time.data) for w in form.filled()] == [
            (["mon", "tue"], "07:30", "11:30"), (["mon", "tue"], "13:30", "17:00")]  # the empty row left out
        overlap = _week({"windows-0-days": ["mon"], "windows-0-start_time": "07:30", "windows-0-end_time": "11:30",
                         "windows-1-days": ["mon", "wed"], "windows-1-start_time": "11:00",
                         "windows-1-end_time": "12:00", "slot_minutes": "30"})
        assert not overlap.validate()
        assert overlap.windows.entries[1].form.end_time.errors
        assert "Hai khung giờ trùng nhau trong cùng một ngày." in overlap.windows.errors  # the page shows it above
        backwards = _week({"windows-0-days": ["fri"], "windows-0-start_time": "11:00", "windows-0-end_time": "08:00",
                           "slot_minutes": "30"})
        assert not backwards.validate() and backwards.windows.entries[0].form.end_time.errors
        no_end = _week({"windows-0-days": ["fri"], "windows-0-start_time": "08:00", "windows-0-end_time": "",
                        "slot_minutes": "30"})  # a ticked row needs both times (Chromium empties a wrong time)
        assert not no_end.validate() and no_end.windows.entries[0].form.end_time.errors
        assert not _week({"windows-0-start_time": "08:00", "windows-0-end_time": "11:00",
                          "slot_minutes": "30"}).validate()  # no day ticked anywhere


def test_admin_unmatched_page_filters_one_facility_and_pages_within_it(client, monkeypatch):
    """An admin's unmatched page has a facility select (every facility, the accounts no facility
    owns, each facility by name); the chosen one goes to billing as ``facility`` and stays in the
    next-page and first-page links, so paging keeps to it. A cashier's page has no select and never
    sends one (billing scopes a cashier to their facility)."""
    from urllib.parse import parse_qs, urlsplit

    from sen_portal.web import cashier, directory

    asked: list[dict[str, str]] = []

    def billing_answer(service, path, params=None, **_kw):
        assert (service, path) == ("billing", "/payments/unmatched")
        asked.append(dict(params or {}))
        return {"payments": [{"id": "standard:t1", "amount": 10_000, "receivedAt": "2026-12-04T09:00:00+07:00",
                              "description": "ck kham", "facility": "tyt-my-hiep"}],
                "next": "1764813600000.standard:t1"}

    monkeypatch.setattr(cashier, "shared_get", billing_answer)
    monkeypatch.setattr(directory, "org_names", lambda: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp",
                                                         "bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp"})
    sign_in(client, "admin")

    def links(page: str) -> dict[str, dict[str, list[str]]]:
        out = {}
        for label in ("Trang sau", "Trang đầu"):
            m = re.search(r'href="([^"]+)"[^>]*>' + label, page)
            if m:
                out[label] = parse_qs(urlsplit(m.group(1).replace("&amp;", "&")).query)
        return out

    page = client.get("/unmatched?facility=tyt-my-hiep").get_data(as_text=True)
    assert asked[-1] == {"limit": "50", "facility": "tyt-my-hiep"}
    assert re.search(r'<option value="tyt-my-hiep" selected>Trạm Y tế xã Mỹ Hiệp', page)
    assert '<option value="">Mọi cơ sở</option>' in page
    assert '<option value="_unowned">Tài khoản không thuộc cơ sở nào</option>' in page
    nxt = links(page)["Trang sau"]
    assert nxt["facility"] == ["tyt-my-hiep"] and nxt["after"] == ["1764813600000.standard:t1"]
    page = client.get("/unmatched", query_string={k: v[0] for k, v in nxt.items()}).get_data(as_text=True)
    assert asked[-1] == {"limit": "50", "after": "1764813600000.standard:t1", "facility": "tyt-my-hiep"}
    assert links(page)["Trang đầu"] == {"facility": ["tyt-my-hiep"]}

    page = client.get("/unmatched?facility=_unowned").get_data(as_text=True)
    assert asked[-1] == {"limit": "50", "facility": "_unowned"}
    assert '<option value="_unowned" selected>' in page
    client.get("/unmatched")
    assert asked[-1] == {"limit": "50"}  # every queue
    client.get("/unmatched?facility=%3Cscript%3E")
    assert asked[-1] == {"limit": "50"}  # not a facility id: ignored

    sign_in(client, "cashier")  # the admin's session replaced
    page = client.get("/unmatched?facility=bvdk-dong-thap").get_data(as_text=True)
    assert asked[-1] == {"limit": "50"} and 'name="facility"' not in page


def test_an_attached_file_opens_only_as_what_it_is_and_only_for_who_the_ehr_lets_see_it(client, monkeypatch):
    """``/documents/<id>``: the DocumentReference read with the user's token; its PNG served as a
    PNG (sandboxed, not sniffed, no upload name in the header); bytes that are not what their type
    says are refused; the EHR's 403 or 404 is a page saying so; a cashier has no such page."""
    import base64

    from sen_portal.web import clinic
    from sen_portal.web.backend import BackendError

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
                           "awAAAABJRU5ErkJggg==")
    stored = {
        "ok": {"contentType": "image/png", "title": "ECG Nguyễn Văn A.png", "data": base64.b64encode(png).decode()},
        "html": {"contentType": "image/png", "data": base64.b64encode(b"<script>alert(1)</script>").decode()},
        "word": {"contentType": "application/msword", "data": base64.b64encode(b"doc").decode()},
        "pdf": {"contentType": "application/pdf", "data": base64.b64encode(b"%PDF-1.4\n%%EOF").decode()},
    }

    def fhir_get(service, path, params=None, **_):
        did = path.rsplit("/", 1)[-1]
        if did == "theirs":
            raise BackendError("refused", "ehr", 403)
        if did not in stored:
            raise BackendError("refused", "ehr", 404)
        return {"resourceType": "DocumentReference", "id": did, "content": [{"attachment": stored[did]}]}

    monkeypatch.setattr(clinic, "fhir_get", fhir_get)
    sign_in(client, "doctor")
    r = client.get("/documents/ok")
    assert r.status_code == 200 and r.data == png and r.mimetype == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"].startswith("sandbox")
    assert r.headers["Content-Disposition"] == 'inline; filename="tai-lieu-ok.png"'  # not the upload's name
    r = client.get("/documents/pdf")  # in the browser's PDF viewer, which a sandbox would block
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    for did in ("html", "word"):
        r = client.get(f"/documents/{did}")
        assert r.status_code == 415 and "PDF, JPEG" in r.get_data(as_text=True)
    for did in ("theirs", "missing"):
        r = client.get(f"/documents/{did}")
        assert r.status_code == 404 and "không tồn tại hoặc bạn không được xem" in r.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/worklist").get_data(as_text=True))})
    sign_in(client, "cashier")
    assert client.get("/documents/ok").status_code in (302, 403)


def test_the_cashiers_queue_names_each_patient_and_finds_invoices_by_name_or_reference(client, monkeypatch):
    """The queue shows each invoice's reference and patient (names from ONE EHR search for the page);
    the search box finds invoices awaiting payment by a name typed without accents (the EHR's
    Patient search, then billing's Invoice search by those subjects) or by a mangled reference
    (billing's search by identifier); POSTed, no name in a URL; the EHR down still shows the queue
    with dashes; the invoice page names the patient, read at the same time as billing's desk answer."""
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module
    from sen_portal.web.backend import BackendError
    from sen_shared.payment_reference import typed_reference

    ref_a, ref_b = "HD0P2B6ZNPM", "HD000000000"  # billing's references: their last symbol checks the others
    invoices = [
        {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-04T09:00:00+07:00",
         "subject": {"reference": "Patient/pa"}, "totalGross": {"value": 150000, "currency": "VND"},
         "identifier": [{"system": cashier.REFERENCE_SYSTEM, "value": ref_a}]},
        {"resourceType": "Invoice", "id": "inv-b", "status": "issued", "date": "2026-12-04T10:00:00+07:00",
         "subject": {"reference": "Patient/pb"}, "totalGross": {"value": 38700, "currency": "VND"},
         "identifier": [{"system": cashier.REFERENCE_SYSTEM, "value": ref_b}]},
    ]
    patients = {"pa": "Nguyễn Văn A", "pb": "Trần Thị Bích"}
    asked: list[tuple[str, str, dict]] = []
    ehr_down = False

    def bundle(resources):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def patient(pid):
        family, *given = patients[pid].split()
        return {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": given}]}

    def fhir_get(service, path, params=None, **_kw):
        params = dict(params or {})
        asked.append((service, path, params))
        if service == "ehr":
            if ehr_down:
                raise BackendError("down", "ehr")
            # the queue's names; an invoice's page asks for the identifiers too (its card form's prefill)
            assert path == "/fhir/Patient" and params["_elements"] in ("name", "name,identifier")
            if "_id" in params:
                return bundle([patient(p) for p in params["_id"].split(",") if p in patients])
            import unicodedata

            def fold(s):
                return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c)).lower()
            return bundle([patient(p) for p, n in patients.items() if fold(n).startswith(fold(params["name"]))])
        assert (service, path) == ("billing", "/fhir/Invoice")  # the queue: status=issued; a search: every status
        if "identifier" in params:
            return bundle([i for i in invoices if params["identifier"] == f"{cashier.REFERENCE_SYSTEM}|"
                           + i["identifier"][0]["value"]])
        if "subject" in params:
            return bundle([i for i in invoices if i["subject"]["reference"] in params["subject"].split(",")])
        return bundle(invoices)

    monkeypatch.setattr(cashier, "fhir_get", fhir_get)
    monkeypatch.setattr(patient_module, "fhir_get", fhir_get)  # the names: the portal's one patient module
    sign_in(client, "cashier")
    page = client.get("/invoices").get_data(as_text=True)
    assert "Nguyễn Văn A" in page and "Trần Thị Bích" in page and ref_a in page and ref_b in page
    ehr = [a for a in asked if a[0] == "ehr"]
    assert len(ehr) == 1 and ehr[0][2]["_id"] == "pa,pb"  # one EHR request for the whole page
    token = csrf_token(page)

    asked.clear()
    r = client.post("/invoices/search", data={"q": "nguyen van a", "csrf_token": token})
    found = r.get_data(as_text=True)
    assert r.status_code == 200 and "Nguyễn Văn A" in found and ref_a in found and ref_b not in found
    assert "Tìm thấy 1 hóa đơn" in found
    assert [a[2].get("subject") for a in asked if a[0] == "billing"] == ["Patient/pa"]
    assert all("nguyen" not in a[1] for a in asked)  # the name travels in the query to the EHR, not the portal URL
    r = client.post("/invoices/search", data={"q": "hd 00o0 00000", "csrf_token": token},
                    headers={"HX-Request": "true"})  # any case, spaces, O for 0
    found = r.get_data(as_text=True)
    assert "Trần Thị Bích" in found and ref_a not in found
    assert found.lstrip().startswith('<section id="invoice-results"')  # the results alone, for htmx
    assert typed_reference("hd0p2b 6znpm") == ref_a and typed_reference("nguyen van a") is None
    for mangled in ("hd0p2b6znpm", "HD 0P2B-6ZNPM", "hđ op2b.6znpm"):  # as a bank or a cashier writes it
        asked.clear()
        found = client.post("/invoices/search", data={"q": mangled, "csrf_token": token}).get_data(as_text=True)
        assert "Nguyễn Văn A" in found and ref_a in found and ref_b not in found, mangled
        assert [a[2].get("identifier") for a in asked if a[0] == "billing"][0] == f"{cashier.REFERENCE_SYSTEM}|{ref_a}"
    asked.clear()
    r = client.post("/invoices/search", data={"q": "HD0P2B6ZNQJ", "csrf_token": token})  # no such reference
    assert [a[0] for a in asked] == ["billing", "ehr"] and "Không có hóa đơn" in r.get_data(as_text=True)
    r = client.post("/invoices/search", data={"q": "le van c", "csrf_token": token})
    assert "Không có hóa đơn nào khớp" in r.get_data(as_text=True)

    def desk(service, path, params=None, **_kw):
        if path != "/payments/invoices/inv-a/desk":  # the queue's summaries: billing down, the totals shown
            raise BackendError("down", "billing")
        return {"status": "issued", "owed": 150000, "paid": 0, "balanceDue": 150000, "reference": ref_a,
                "resource": invoices[0], "qr": None}

    monkeypatch.setattr(cashier, "shared_get", desk)
    asked.clear()
    link = re.search(r'href="(/invoices/inv-a[^"]*)"', page).group(1).replace("&amp;", "&")
    assert link == "/invoices/inv-a?p=pa"
    shown = client.get(link).get_data(as_text=True)
    assert re.search(r'data-testid="invoice-patient">Nguyễn Văn A<', shown) and ref_a in shown
    assert [a[2].get("_id") for a in asked] == ["pa"]  # asked with the desk answer, not after it
    asked.clear()
    shown = client.get("/invoices/inv-a?p=pb").get_data(as_text=True)  # another patient's id: the Invoice decides
    assert re.search(r'data-testid="invoice-patient">Nguyễn Văn A<', shown) and "Trần Thị Bích" not in shown

    ehr_down = True
    r = client.get("/invoices")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and ref_a in page and ref_b in page and "Trần Thị Bích" not in page
    assert re.search(r'data-testid="invoice-patient">—<', page)
    shown = client.get("/invoices/inv-a?p=pa")
    assert shown.status_code == 200 and re.search(r'data-testid="invoice-patient">—<', shown.get_data(as_text=True))
    r = client.post("/invoices/search", data={"q": "nguyen van a", "csrf_token": token})
    assert r.status_code == 503 and shows_alert(r.get_data(as_text=True))  # an outage's status


def test_a_patients_age_is_completed_years_in_vietnam_and_months_under_one():
    from datetime import date

    from sen_portal.web.patients import age, patient_id

    on = date(2026, 12, 5)
    assert age("1970-05-20", on) == (56, "years") and age("1970-12-05", on) == (56, "years")
    assert age("1970-12-06", on) == (55, "years")  # the birthday is tomorrow
    assert age("1970", on) == (55, "years") and age("1970-12", on) == (55, "years")  # never older than they are
    assert age("2026-02-10", on) == (9, "months") and age("2027-01-01", on) is None and age("", on) is None
    assert age("nonsense", on) is None and age("2020-13", on) is None
    assert patient_id({"reference": "Patient/p-1"}) == "p-1" and patient_id("Patient/../x") is None
    assert patient_id({"reference": "Group/g"}) is None and patient_id(None) is None


def test_the_worklist_names_only_what_the_ehr_returns_and_survives_its_refusal(client, monkeypatch):
    """The worklist shows each consult's requesting clinic and reason; a patient's name only when the
    EHR's search returned that Patient (it leaves out whom the doctor may not read); the EHR
    refusing or not answering the search is a dash with why, never an error page; one EHR search. The
    specialty filter's choices (the hub's PractitionerRoles, fd8a8d1) are asked before the worklist (a
    specialty none of them is refused without asking teleconsult), once: the directory keeps them."""
    from sen_portal.web import clinic, directory, doctor
    from sen_portal.web import patients as patient_module
    from sen_portal.web.backend import BackendError

    tasks = [{"resourceType": "Task", "id": f"t{i}", "status": "requested", "priority": "urgent",
              "authoredOn": "2026-12-04T09:00:00+07:00", "for": {"reference": f"Patient/p{i}"},
              "focus": {"reference": f"ServiceRequest/sr{i}"}, "requester": {"reference": "Organization/tyt-my-hiep"}}
             for i in (1, 2)]
    srs = [{"resourceType": "ServiceRequest", "id": "sr1", "reasonCode": [{"text": "Nhồi máu cơ tim cấp"}]},
           {"resourceType": "ServiceRequest", "id": "sr2", "reasonCode": [{"text": "Tăng huyết áp"}]}]
    ehr: dict[str, object] = {"answer": "p1"}
    asked: list[tuple[str, str, dict]] = []

    def bundle(resources):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def fhir_get(service, path, params=None, **_kw):
        asked.append((service, path, dict(params or {})))
        if (service, path) == ("teleconsult", "/fhir/Task/$worklist"):
            return bundle(tasks)
        if (service, path) == ("teleconsult", "/fhir/ServiceRequest"):
            assert params["_id"] == "sr1,sr2"
            return bundle(srs)
        if (service, path) in (("ehr", "/fhir/PractitionerRole"), ("ehr", "/fhir/Organization")):
            return bundle([])  # the directory's: the hub's specialties, the facilities' districts and types
        assert (service, path) == ("ehr", "/fhir/Patient") and params["_id"] == "p1,p2"
        if isinstance(ehr["answer"], BackendError):
            raise ehr["answer"]
        return bundle([{"resourceType": "Patient", "id": "p1", "name": [{"family": "Lê", "given": ["Văn", "Cường"]}]}])

    for module in (doctor, clinic, patient_module, directory):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    monkeypatch.setattr(directory, "names", lambda rtype: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    sign_in(client, "doctor")
    r = client.get("/worklist")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Lê Văn Cường" in page and "Trạm Y tế xã Mỹ Hiệp" in page
    assert "Nhồi máu cơ tim cấp" in page and "Tăng huyết áp" in page
    assert page.count("hồ sơ chưa được chia sẻ với bạn") == 1  # p2: left out by the EHR
    paths = [a[1] for a in asked]
    assert [a[1] for a in asked if a[0] == "ehr"].count("/fhir/Patient") == 1  # one search of the patients
    assert paths.count("/fhir/PractitionerRole") == 1
    assert paths.index("/fhir/PractitionerRole") < paths.index("/fhir/Task/$worklist")
    asked.clear()  # the refresh: a consult's reason never changes, so teleconsult is asked its worklist alone
    assert "Tăng huyết áp" in client.get("/worklist", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert [a[1] for a in asked] == ["/fhir/Task/$worklist", "/fhir/Patient"]
    for err in (BackendError("refused", "ehr", 403), BackendError("down", "ehr")):
        ehr["answer"] = err
        r = client.get("/worklist", headers={"HX-Request": "true"})
        part = r.get_data(as_text=True)
        assert r.status_code == 200 and "Lê Văn Cường" not in part and not shows_alert(part)
        assert part.count("hệ thống hồ sơ sức khỏe không trả lời") == 2 and "Tăng huyết áp" in part


def test_a_list_asks_the_service_requests_of_older_tasks_only(client, monkeypatch):
    """Teleconsult puts the reason on a consult's Task at submission; a Task stored before that has
    none, so its ServiceRequest is asked for (one search for the page), and only its: a page whose
    Tasks all carry their reason asks teleconsult its worklist alone."""
    from sen_portal.web import clinic, directory, doctor
    from sen_portal.web import patients as patient_module

    def task(i: int, **extra):
        return {"resourceType": "Task", "id": f"t{i}", "status": "requested", "priority": "urgent",
                "authoredOn": "2026-12-04T09:00:00+07:00", "for": {"reference": f"Patient/p{i}"},
                "focus": {"reference": f"ServiceRequest/sr{i}"},
                "requester": {"reference": "Organization/tyt-my-hiep"}, **extra}

    tasks = [task(1, reasonCode={"text": "Nhồi máu cơ tim cấp"}), task(2)]  # t2: stored before the reason
    asked: list[tuple[str, dict]] = []

    def bundle(resources):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def fhir_get(service, path, params=None, **_kw):
        asked.append((path, dict(params or {})))
        if path == "/fhir/Task/$worklist":
            return bundle(tasks)
        if path == "/fhir/ServiceRequest":
            return bundle([{"resourceType": "ServiceRequest", "id": "sr2", "reasonCode": [{"text": "Tăng huyết áp"}],
                            "requester": {"reference": "Organization/other"}}])
        return bundle([])

    for module in (doctor, clinic, patient_module):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    monkeypatch.setattr(directory, "names", lambda rtype: {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    sign_in(client, "doctor")
    page = client.get("/worklist").get_data(as_text=True)
    assert "Nhồi máu cơ tim cấp" in page and "Tăng huyết áp" in page
    assert [p["_id"] for path, p in asked if path == "/fhir/ServiceRequest"] == ["sr2"]
    table = page[page.index('id="worklist"'):]  # the facility filter above it names the clinic too (fd8a8d1)
    assert table.count("Trạm Y tế xã Mỹ Hiệp") == 2  # the requesting clinic: the Task's own
    tasks[1]["reasonCode"] = {"text": "Tăng huyết áp"}
    monkeypatch.setattr(clinic, "_reasons_kept", {})
    asked.clear()
    assert "Tăng huyết áp" in client.get("/worklist", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "/fhir/ServiceRequest" not in [path for path, _ in asked]


def _consult_backends(monkeypatch, owner: str, **task_fields):
    """One consult (Task owned by ``owner``, its ServiceRequest's reason I10 with the Vietnamese text
    stored at submission; ``task_fields`` over the Task's) served to the clinic's and the doctor's consult
    pages and both lists."""
    from sen_portal.web import clinic, directory, doctor
    from sen_portal.web import patients as patient_module

    task = {"resourceType": "Task", "id": "t1", "status": "accepted", "priority": "urgent",
            "authoredOn": "2026-12-04T09:00:00+07:00", "for": {"reference": "Patient/p1"},
            "basedOn": [{"reference": "ServiceRequest/sr1"}], "focus": {"reference": "ServiceRequest/sr1"},
            "requester": {"reference": "Organization/tyt-my-hiep"}, "owner": {"reference": owner}, **task_fields}
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
          "priority": "urgent", "subject": {"reference": "Patient/p1"},
          "requester": {"reference": "Organization/tyt-my-hiep"},
          "reasonCode": [{"coding": [{"system": icd10.SYSTEM, "code": "I10",
                                      "display": "Tăng huyết áp vô căn (nguyên phát)"}],
                          "text": "Tăng huyết áp vô căn (nguyên phát)"}],
          "note": [{"text": "Xin ý kiến tuyến trên."}]}

    def bundle(resources):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def fhir_get(service, path, params=None, **_kw):
        if (service, path) == ("teleconsult", "/fhir/Task"):
            return bundle([task, sr] if (params or {}).get("_id") == "t1" else [task])
        if (service, path) == ("teleconsult", "/fhir/Task/$worklist"):
            return bundle([task])
        if (service, path) == ("teleconsult", "/fhir/ServiceRequest"):
            return bundle([sr])
        if (service, path) == ("ehr", "/fhir/Patient"):
            return bundle([{"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-05-20",
                            "name": [{"family": "Lê", "given": ["Văn", "Cường"]}]}])
        return bundle([])  # the thread, the visit, the hub's doctors: none

    for module in (doctor, clinic, patient_module):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp", "tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"},
        "Practitioner": {"bs-nguyen-van-an": "Nguyễn Văn An"}}[rtype])


def _owner_row(page: str) -> tuple[str, str]:
    m = re.search(r'<dt>([^<]*)</dt><dd data-testid="task-owner">([^<]*)</dd>', page)
    assert m, "no owner row on the page"
    return m.group(1), m.group(2)


def test_the_consult_pages_name_the_hub_until_a_doctor_takes_the_consult(client, monkeypatch):
    """The Task's owner is the hub (an Organization) until a doctor accepts it: the
    clinic's consult page says "Tuyến trên / Hub: <the hospital>" then, and "Bác sĩ chuyên khoa /
    Specialist: <the doctor>" only when the owner is a Practitioner (the hospital was labelled Specialist);
    the doctor's page says "Người giữ ca" (held by): no doctor yet, or the doctor, and names the requesting
    clinic (not the doctor's own hub)."""
    _consult_backends(monkeypatch, "Organization/bvdk-dong-thap")
    sign_in(client, "clinic")
    page = client.get("/consults/t1").get_data(as_text=True)
    assert _owner_row(page) == ("Tuyến trên", "Bệnh viện Đa khoa Đồng Tháp")
    assert "Bác sĩ chuyên khoa" not in page
    token = csrf_token(client.get("/consults").get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": "/consults", "csrf_token": token})
    page = client.get("/consults/t1").get_data(as_text=True)
    assert _owner_row(page) == ("Hub", "Bệnh viện Đa khoa Đồng Tháp") and "Specialist" not in page

    _consult_backends(monkeypatch, "Practitioner/bs-nguyen-van-an")
    page = client.get("/consults/t1").get_data(as_text=True)
    assert _owner_row(page) == ("Specialist", "Nguyễn Văn An")
    client.post("/logout", data={"csrf_token": csrf_token(page)})
    sign_in(client, "doctor")  # the doctor's page (their own hub's consult) says which doctor holds it, if any
    token = csrf_token(client.get("/worklist").get_data(as_text=True))
    client.post("/language", data={"lang": "vi", "next": "/worklist", "csrf_token": token})
    page = client.get("/tasks/t1").get_data(as_text=True)
    assert _owner_row(page) == ("Người giữ ca", "Nguyễn Văn An (bạn)")
    _consult_backends(monkeypatch, "Organization/bvdk-dong-thap")
    page = client.get("/tasks/t1").get_data(as_text=True)
    assert _owner_row(page) == ("Người giữ ca", "Chưa bác sĩ nào nhận")
    assert re.search(r'<dt>Cơ sở gửi</dt><dd data-testid="consult-requester">Trạm Y tế xã Mỹ Hiệp</dd>', page)


def test_a_consults_reason_is_shown_in_the_pages_language_from_its_icd10_code(client, monkeypatch):
    """The reason stored at submission is the Vietnamese label; an English page shows the ICD-10
    subset's English label for its code (lists and consult pages); a code the subset does not hold
    shows the stored text."""
    _consult_backends(monkeypatch, "Organization/bvdk-dong-thap")
    vi, en = "Tăng huyết áp vô căn (nguyên phát)", "Essential (primary) hypertension"
    for user, paths in (("clinic", ("/consults", "/consults/t1")), ("doctor", ("/worklist", "/tasks/t1"))):
        sign_in(client, user)
        token = csrf_token(client.get(paths[0]).get_data(as_text=True))
        client.post("/language", data={"lang": "vi", "next": paths[0], "csrf_token": token})
        for path in paths:
            page = client.get(path).get_data(as_text=True)
            assert vi in page and en not in page, (user, path)
        client.post("/language", data={"lang": "en", "next": paths[0], "csrf_token": token})
        for path in paths:
            page = client.get(path).get_data(as_text=True)
            assert en in page and vi not in page, (user, path)
        client.post("/logout", data={"csrf_token": token})
    with client.application.test_request_context():
        unknown = {"coding": [{"system": icd10.SYSTEM, "code": "Z99.99", "display": "Bệnh khác"}], "text": "Bệnh khác"}
        assert icd10.label(unknown, "en") == "Bệnh khác"  # not in the subset: the stored text
        other = {"coding": [{"system": "http://snomed.info/sct", "code": "I10"}], "text": "Văn bản"}
        assert icd10.label(other, "en") == "Văn bản"  # another system's I10 is not ICD-10's
        assert icd10.label(None, "en") == "—"


def test_a_completed_consults_diagnoses_are_shown_in_the_pages_language(client, monkeypatch):
    """The result of a completed consult (the Task's conclusion, ICD-10 codings whose display is the
    Vietnamese label the doctor picked, and the signed minutes' diagnosis list) on the clinic's consult page
    and the doctor's: each diagnosis line is its code and the code's label in the page's language; a code
    outside the subset keeps its stored display; what the doctor wrote stays as written."""
    import base64
    import json

    vi_i10, en_i10 = "Tăng huyết áp vô căn (nguyên phát)", "Essential (primary) hypertension"
    codings = [{"system": icd10.SYSTEM, "code": "I10", "display": vi_i10},
               {"system": icd10.SYSTEM, "code": "Z99.99", "display": "Bệnh khác ngoài danh mục"}]
    minutes = {"start": "2026-12-04T10:00:00+07:00", "end": "2026-12-04T10:30:00+07:00",
               "history": "Tăng huyết áp 5 năm.", "conclusion": codings, "recommendations": "Tăng amlodipin 10 mg."}
    out_type = "https://sen.example.vn/fhir/CodeSystem/consult-output"
    output = [{"type": {"coding": [{"system": out_type, "code": "conclusion"}], "text": "Kết luận"},
               "valueCodeableConcept": {"coding": codings}},
              {"type": {"coding": [{"system": out_type, "code": "recommendations"}]},
               "valueString": "Tăng huyết áp độ 2 chưa kiểm soát."},
              {"type": {"text": "Biên bản"}, "valueAttachment": {
                  "contentType": "application/json",
                  "data": base64.b64encode(json.dumps(minutes, ensure_ascii=False).encode()).decode()}}]
    _consult_backends(monkeypatch, "Practitioner/bs-nguyen-van-an", status="completed", output=output)
    expected = {"vi": [f"I10 — {vi_i10}", "Z99.99 — Bệnh khác ngoài danh mục"],
                "en": [f"I10 — {en_i10}", "Z99.99 — Bệnh khác ngoài danh mục"]}
    for user, path in (("clinic", "/consults/t1"), ("doctor", "/tasks/t1")):
        sign_in(client, user)
        token = csrf_token(client.get(path).get_data(as_text=True))
        for lang, lines in expected.items():
            client.post("/language", data={"lang": lang, "next": path, "csrf_token": token})
            page = client.get(path).get_data(as_text=True)
            shown = [re.sub(r"<[^>]+>", "", d) for d in re.findall(r'<span data-testid="diagnosis">(.*?)</span>', page)]
            assert shown == lines * 2, (user, lang, shown)  # the result's conclusion, then the minutes' diagnoses
            result = page[page.index('data-testid="result"'):]
            assert "Tăng huyết áp độ 2 chưa kiểm soát." in result and "Tăng amlodipin 10 mg." in result
            assert "Tăng huyết áp 5 năm." in result  # the minutes' free text as the doctor wrote it
            if lang == "en":
                assert vi_i10 not in page, (user, lang)
        client.post("/logout", data={"csrf_token": token})


def test_the_invoice_details_are_one_label_value_grid_with_tabular_amounts(client, monkeypatch):
    """The invoice's details (patient, reference, issued) and its amounts (a list of their own, which the
    status box swaps) were two grids, each sizing its own label column, so the amounts' rows sat offset:
    now both lists are rows of one grid (CSS subgrid), the amounts in tabular figures, right-aligned."""
    invoice = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-04T09:00:00+07:00",
               "subject": {"reference": "Patient/pa"},
               "lineItem": [{"chargeItemReference": {"display": "Hội chẩn từ xa"},
                             "priceComponent": [{"type": "base", "amount": {"value": 150000, "currency": "VND"}}]}]}

    stub_invoice_desk(monkeypatch, invoice, 150000)
    sign_in(client, "cashier")
    page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
    details = page.split('<div class="facts-grid" data-testid="invoice-details">', 1)[1].split("</div>", 1)[0]
    assert details.count('<dl class="facts"') == 2 and 'id="invoice-facts"' in details  # both lists, one grid
    amounts = re.findall(r'<dd class="money">(?:<strong>)?([^<]*)<', details)
    assert amounts == ["150.000\u00a0₫", "0\u00a0₫", "150.000\u00a0₫"]
    assert re.search(r'<td class="money">150.000\u00a0₫</td>', page)  # the line item's amount too
    css = client.get("/assets/app.css").get_data(as_text=True)
    assert re.search(r"\.facts-grid > dl\.facts \{[^}]*grid-template-columns: subgrid", css)
    assert re.search(r"\.money \{[^}]*font-variant-numeric: tabular-nums", css)
    assert re.search(r"dl\.facts dd\.money \{[^}]*text-align: right", css)


def _list_labels(page: str, start: str = '<table class="list"') -> tuple[list[str], list[list[str]]]:
    """A list's (the first, or the one starting with ``start``) column headers, and each row's cells' data-labels."""
    table = page[page.index(start):]
    table = table[:table.index("</table>")]
    heads = [re.sub(r"<[^>]+>", "", h)
             for h in re.findall(r'<th scope="col" role="columnheader"[^>]*>(.*?)</th>', table)]
    rows = [re.findall(r'<td role="cell" data-label="([^"]*)"', tr)
            for tr in re.findall(r'<tr role="row">(.*?)</tr>', table[table.index("<tbody"):], re.S)]
    return heads, rows


def test_the_lists_label_each_cell_with_its_header_and_link_the_consult_from_the_patients_name(client, monkeypatch):
    """At 360 px the lists are stacked cards (app.css `table.list` below 600 px), each cell on its own line
    after its column's label: every cell's `data-label` is its column header's text, translated (vi, en);
    the worklist and the clinic's consults link the consult from the patient's name, one link a row, and
    from the date where the EHR gives no name."""
    from sen_portal.web import patients as patient_module
    from sen_portal.web.backend import BackendError

    _consult_backends(monkeypatch, "Organization/bvdk-dong-thap")
    expected = {
        ("doctor", "/worklist", "/tasks/t1"): {
            "vi": ["Mức độ ưu tiên", "Hạn", "Trạng thái", "Người bệnh", "Cơ sở gửi", "Người giữ ca", "Lý do",
                   "Ngày yêu cầu"],
            "en": ["Priority", "Due", "Status", "Patient", "Requesting clinic", "Held by", "Reason", "Requested"]},
        ("clinic", "/consults", "/consults/t1"): {
            "vi": ["Ngày yêu cầu", "Người bệnh", "Mức độ ưu tiên", "Trạng thái", "Lý do"],
            "en": ["Requested", "Patient", "Priority", "Status", "Reason"]}}
    for (user, path, consult), by_lang in expected.items():
        sign_in(client, user)
        token = csrf_token(client.get(path).get_data(as_text=True))
        for lang, labels in by_lang.items():
            client.post("/language", data={"lang": lang, "next": path, "csrf_token": token})
            page = client.get(path).get_data(as_text=True)
            assert _list_labels(page) == (labels, [labels]), (user, path, lang)
            links = re.findall(r'<a href="([^"]+)"[^>]*>([^<]*)</a>', page[page.index("<tbody"):page.index("</tbody>")])
            assert links == [(consult, "Lê Văn Cường")], (user, path, lang)  # the name, the row's only link
        client.post("/language", data={"lang": "vi", "next": path, "csrf_token": token})
        real = patient_module.fhir_get

        def no_ehr(service, rpath, params=None, _real=real, **kw):
            if service == "ehr":
                raise BackendError("down", "ehr")
            return _real(service, rpath, params, **kw)

        monkeypatch.setattr(patient_module, "fhir_get", no_ehr)
        page = client.get(path).get_data(as_text=True)
        body = page[page.index("<tbody"):page.index("</tbody>")]
        links = re.findall(r'<a href="([^"]+)"[^>]*>([^<]*)</a>', body)
        assert links == [(consult, "04/12/2026 09:00")] and "Lê Văn Cường" not in body, (user, path)  # the date
        monkeypatch.setattr(patient_module, "fhir_get", real)
        client.post("/logout", data={"csrf_token": token})

    css = client.get("/assets/app.css").get_data(as_text=True)  # the cards: one rule set for every list
    assert "@media (max-width: 37.5em)" in css and "content: attr(data-label)" in css


def test_the_invoices_payments_and_the_shifts_summary_are_cards_on_a_phone(client, monkeypatch):
    """The invoice's payments (four columns) and the closed shift's summary (cash and transfers: expected,
    counted, difference) overflowed a 360 px window: they are lists now (`table.list`: cards below 600 px),
    each cell labelled with its column's header in the page's language, the amounts right-aligned at wide
    widths (`money` on the header and the cells) and, in a card, after their label like every value; the
    shift's row header (Cash, Transfers) is the card's title."""
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module

    invoice = {"resourceType": "Invoice", "id": "inv-a", "status": "balanced", "date": "2026-12-04T09:00:00+07:00",
               "subject": {"reference": "Patient/pa"}}
    payments = [{"id": "pay-1", "receivedAt": "2026-12-04T09:05:00+07:00", "channel": "transfer", "amount": 150000,
                 "outcome": "applied"},
                {"id": "pay-2", "receivedAt": "2026-12-04T09:10:00+07:00", "channel": "cash", "amount": 20000,
                 "outcome": "applied"}]

    def desk(service, path, params=None, **_kw):
        return {"status": "balanced", "owed": 150000, "paid": 170000, "balanceDue": 0, "credit": 20000,
                "reference": "HD7K2M9QX4C", "resource": invoice, "qr": None, "payments": payments}

    def fhir_get(service, path, params=None, **_kw):
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}

    closed = {"expected": {"cash": 520000, "transfers": 150000}, "counted": {"cash": 500000, "transfers": 150000},
              "difference": {"cash": -20000, "transfers": 0}}

    def billing(method, path, body=None, params=None, key=None):  # as cashier._json
        return closed if (method, path) == ("POST", "/payments/shifts/current/close") else {}

    monkeypatch.setattr(cashier, "shared_get", desk)
    monkeypatch.setattr(cashier, "_json", billing)
    monkeypatch.setattr(patient_module, "fhir_get", fhir_get)
    sign_in(client, "cashier")
    expected = {"vi": (["Thời điểm nhận", "Hình thức", "Số tiền", "Kết quả"],
                       ["Hình thức", "Theo sổ", "Thực đếm", "Chênh lệch"]),
                "en": (["Received at", "Channel", "Amount", "Outcome"],
                       ["Channel", "Expected", "Counted", "Difference"])}
    token = csrf_token(client.get("/shift").get_data(as_text=True))
    for lang, (pay_labels, shift_labels) in expected.items():
        client.post("/language", data={"lang": lang, "next": "/shift", "csrf_token": token})
        page = client.get("/invoices/inv-a?p=pa").get_data(as_text=True)
        assert _list_labels(page, '<table class="list" role="table" data-testid="payments"') == (
            pay_labels, [pay_labels, pay_labels]), lang
        pay = page[page.index('data-testid="payments"'):page.index("</table>", page.index('data-testid="payments"'))]
        assert re.search(r'<th scope="col" role="columnheader" class="money">', pay)  # the amounts' column, right
        assert re.findall(r'class="money">([^<]*)</td>', pay) == ["150.000\u00a0₫", "20.000\u00a0₫"]

        page = client.post("/shift", data={"which": "close", "confirm": "shift-close", "close-counted_cash": "500000",
                                            "close-counted_transfers": "150000", "csrf_token": token}
                           ).get_data(as_text=True)
        start = '<table class="list" role="table" data-testid="shift-summary"'
        heads, rows = _list_labels(page, start)
        assert heads == shift_labels and rows == [shift_labels[1:]] * 2, lang
        summary = page[page.index(start):page.index("</table>", page.index(start))]
        assert re.findall(r'<th scope="row" role="rowheader">([^<]*)</th>', summary) == (
            ["Tiền mặt", "Chuyển khoản"] if lang == "vi" else ["Cash", "Transfers"])
        assert re.search(r'<th scope="col" role="columnheader"><span class="visually-hidden">', summary)
        assert re.findall(r'<td role="cell" data-label="[^"]*" class="money">([^<]*)</td>', summary) == [
            "520.000\u00a0₫", "500.000\u00a0₫", "-20.000\u00a0₫", "150.000\u00a0₫", "150.000\u00a0₫", "0\u00a0₫"]

    css = client.get("/assets/app.css").get_data(as_text=True)
    phone = css[css.index("@media (max-width: 37.5em)"):]
    assert re.search(r"table\.list > tbody > tr > th \{[^}]*display: block", phone)  # the row header, a title
    assert re.search(r"table\.list > tbody > tr > td\.money \{[^}]*text-align: left", phone)
    # the invoice's label/value lists: a long label ("Tiền thừa của người bệnh") wraps, the values keep half
    assert "dl.facts, .facts-grid { grid-template-columns: minmax(0, max-content) minmax(50%, 1fr); }" in phone
