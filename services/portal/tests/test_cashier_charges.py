"""The cashier's new invoice (``/invoices/new``, web/charges.py) with the Flask test client: the EHR
and billing are fakes answering what the real ones answer (the real ones: the integration test
``tests/integration/test_portal_cashier_charges.py``); a back-end that is down is a closed port."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sen_portal.web.backend import BackendError

from tests.support import VN_TZ, csrf_token, flash_step, flashed_steps, input_value, portal_app


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="0").test_client() as c:
        yield c


def sign_in(client, user: str = "cashier") -> None:
    page = client.get("/login").get_data(as_text=True)
    r = client.post("/login", data={"username": user, "password": f"sen-{user}", "csrf_token": csrf_token(page)})
    assert r.status_code == 302


def english(client) -> None:
    page = client.get("/invoices/new").get_data(as_text=True)
    client.post("/language", data={"lang": "en", "next": "/", "csrf_token": csrf_token(page)})


def text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


SYS_BHYT_EHR = "https://fhir.sen.vn/sid/bhyt"
MAI = {"resourceType": "Patient", "id": "bn-0001", "birthDate": "1968-04-12",
       "name": [{"family": "Nguyễn", "given": ["Thị", "Mai"], "text": "Nguyễn Thị Mai"}],
       "identifier": [{"system": "https://fhir.sen.vn/sid/cccd", "value": "087168004512"},
                      {"system": SYS_BHYT_EHR, "value": "DN4878701234569"}]}


def definition(cid: str, title: str, price: int, covered: bool = True) -> dict[str, Any]:
    res = {"resourceType": "ChargeItemDefinition", "id": cid, "status": "active", "title": title,
           "url": f"https://sen.vn/fhir/ChargeItemDefinition/{cid}", "meta": {"versionId": "1"},
           "code": {"coding": [{"system": "urn:sen:billing:service", "code": cid}], "text": title},
           "propertyGroup": [{"priceComponent": [{"type": "base", "amount": {"value": price, "currency": "VND"}}]}]}
    if not covered:
        res["extension"] = [{"url": "https://sen.vn/fhir/StructureDefinition/bhyt-covered", "valueBoolean": False}]
    return res


class FakeBilling:
    """The EHR and billing as the page sees them: the Patient search, the price list, Coverage, and
    the writes, honouring ``Idempotency-Key`` as billing does (the same key and body: the first answer)."""

    def __init__(self) -> None:
        self.prices = {d["id"]: d for d in (definition("kham-benh", "Khám bệnh", 39000),
                                           definition("xn-cong-thuc-mau", "Xét nghiệm tổng phân tích tế bào máu",
                                                      46000),
                                           definition("ban-sao-ho-so", "Sao y hồ sơ bệnh án", 20000, covered=False))}
        self.coverages: list[dict[str, Any]] = []
        self.writes: list[tuple[str, dict[str, Any], str]] = []  # (path, body, key) of every write sent
        self.answers: dict[str, tuple[str, Any]] = {}  # key -> (body fingerprint, answer)
        self.charges: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, BackendError] = {}  # path prefix -> the error billing answers

    def price(self, cid: str) -> int:
        return self.prices[cid]["propertyGroup"][0]["priceComponent"][0]["amount"]["value"]

    @staticmethod
    def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    def get(self, service: str, path: str, params: Any = None, **_kw: Any) -> dict[str, Any]:
        params = dict(params or {})
        if service == "ehr":
            assert path == "/fhir/Patient"
            if "_id" in params:
                return self.bundle([MAI] if "bn-0001" in params["_id"].split(",") else [])
            wanted = params.get("name", "") + params.get("identifier", "")
            hit = "nguyen" in wanted or "087168004512" in wanted
            return self.bundle([MAI] if hit else [])
        if path in self.fail:
            raise self.fail[path]
        if path == "/fhir/ChargeItemDefinition":
            return self.bundle(list(self.prices.values()))
        if path == "/fhir/Coverage":
            return self.bundle([c for c in self.coverages if c["beneficiary"]["reference"] == params["beneficiary"]])
        if path == "/fhir/ChargeItem":  # billing's invoiced=false: the patient's charges no invoice names
            assert params["invoiced"] == "false"
            on_invoice = {li["chargeItemReference"]["reference"][11:] for inv in self.invoices.values()
                          for li in inv["lineItem"]}
            return self.bundle([c for c in self.charges.values() if c["id"] not in on_invoice
                                and c["subject"]["reference"] == params["subject"]])
        raise AssertionError(path)

    def call(self, service: str, method: str, path: str, *, json: Any = None, headers: Any = None,
             **_kw: Any) -> Any:
        assert (service, method) == ("billing", "POST")
        key = (headers or {}).get("Idempotency-Key", "")
        self.writes.append((path, json, key))
        for prefix, err in self.fail.items():
            if path.startswith(prefix):
                raise err
        fingerprint = repr((path, json))
        if key in self.answers:
            seen, answer = self.answers[key]
            if seen != fingerprint:
                raise BackendError("refused", "billing", 422, "this Idempotency-Key was used with a different request")
            return Answer(answer)
        if path == "/fhir/ChargeItem":
            cid = json["definitionCanonical"][0].split("/")[-1]
            if cid not in self.prices:
                raise BackendError("refused", "billing", 422, f"the price list has no ChargeItemDefinition/{cid}")
            answer = {**json, "id": f"ci-{len(self.charges) + 1}", "enteredDate": "2026-12-05T08:30:00+07:00",
                      "priceOverride": {"value": self.price(cid) * json["quantity"]["value"], "currency": "VND"}}
            self.charges[answer["id"]] = answer
        elif path == "/fhir/Invoice":
            iid = "inv-" + "-".join(sorted(li["chargeItemReference"]["reference"][11:] for li in json["lineItem"]))
            answer = self.invoices.setdefault(iid, {**json, "id": iid})
        elif path.endswith("/$issue"):
            answer = {**self.invoices[path.split("/")[3]], "status": "issued"}
        elif path == "/fhir/Coverage":
            answer = {**json, "id": f"cov-{len(self.coverages) + 1}"}
            self.coverages.append(answer)
        else:
            raise AssertionError(path)
        self.answers[key] = (fingerprint, answer)
        return Answer(answer)


class Answer:
    def __init__(self, body: Any) -> None:
        self.content = b"x"
        self._body = body

    def json(self) -> Any:
        return self._body


@pytest.fixture()
def fake(monkeypatch):
    from sen_portal.web import charges, clinic
    from sen_portal.web import patients as patient_module

    f = FakeBilling()
    monkeypatch.setattr(charges, "fhir_get", f.get)
    monkeypatch.setattr(clinic, "fhir_get", f.get)  # the patient search is the clinic's (find_patients)
    monkeypatch.setattr(patient_module, "fhir_get", f.get)
    monkeypatch.setattr(charges, "call", f.call)
    return f


def post(client, page: str, **data: Any) -> Any:
    """The page's form posted again as the browser would: its state (key, patient, lines) and ``data``."""
    form: dict[str, Any] = {"csrf_token": csrf_token(page), "key": input_value(page, "key"),
                            "patient": input_value(page, "patient"),
                            "who": input_value(page, "who"), "service_q": input_value(page, "service_q"),
                            "line_service": re.findall(r'name="line_service" value="([^"]*)"', page),
                            "line_qty": re.findall(r'name="line_qty" value="([^"]*)"', page)}
    form.update(data)
    return client.post("/invoices/new", data=form)


def lines_of(page: str) -> list[tuple[str, str]]:
    return list(zip(re.findall(r'name="line_service" value="([^"]*)"', page),
                    re.findall(r'name="line_qty" value="([^"]*)"', page), strict=True))


def test_only_a_facilitys_cashier_opens_it_from_the_queue(client, fake):
    sign_in(client, "clinic")
    r = client.get("/invoices/new")
    assert r.status_code == 403 and "Vai trò của bạn không được mở trang này." in r.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/patients").get_data(as_text=True))})
    sign_in(client, "admin")  # admin may open every page, but names no facility to charge for
    r = client.get("/invoices/new")
    assert r.status_code == 403 and "không gắn với cơ sở nào" in r.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_token(r.get_data(as_text=True))})
    sign_in(client, "cashier")
    from sen_portal.web import cashier

    monkey_queue = fake.bundle([])
    cashier_get = cashier.fhir_get
    try:
        cashier.fhir_get = lambda *a, **k: monkey_queue
        queue = client.get("/invoices").get_data(as_text=True)
    finally:
        cashier.fhir_get = cashier_get
    assert re.search(r'<a class="button primary" href="/invoices/new"[^>]*>Hóa đơn mới</a>', queue)
    page = client.get("/invoices/new").get_data(as_text=True)
    assert "<h1>Hóa đơn mới</h1>" in page and re.fullmatch(r"[0-9a-f]{32}", input_value(page, "key"))
    again = client.get("/invoices/new").get_data(as_text=True)
    assert input_value(again, "key") != input_value(page, "key")  # one a form
    english(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    assert "<h1>New invoice</h1>" in page and "Create and issue the invoice" in page


def test_the_new_invoice_page_has_each_id_once(client, fake):
    """Review 9: the hidden patient field and the patient's section were both id="patient"."""
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, who="nguyen thi mai", action="find-patient").get_data(as_text=True)
    for shown in (page, post(client, page, choose="bn-0001").get_data(as_text=True)):
        ids = re.findall(r'\sid="([^"]+)"', shown)
        assert ids and sorted({i for i in ids if ids.count(i) > 1}) == [], ids
        assert 'id="patient-section"' in shown


def test_a_walk_in_patient_found_carded_charged_and_issued_in_one_submit(client, fake):
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    # 1. the patient, by a name typed without accents (the clinic's search: name, CCCD or BHYT number)
    page = post(client, page, who="nguyen thi mai", action="find-patient").get_data(as_text=True)
    assert "Nguyễn Thị Mai" in page and 'name="choose" value="bn-0001"' in page
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    assert input_value(page, "patient") == "bn-0001"
    assert re.search(r'data-testid="patient-name">Nguyễn Thị Mai', page)
    # 2. no card in billing: the form offers to record one, with the EHR's number and its level (DN4 → 80 %)
    assert 'data-testid="no-card"' in page and input_value(page, "card_number") == "DN4878701234569"
    assert re.search(r'<option selected value="80">|<option value="80" selected>', page)
    today = datetime.now(VN_TZ).date()  # the cards' validity is judged on Vietnam's date, not the server's
    card = {"action": "record-card", "card_number": "dn4878701234569", "card_level": "80",
            "card_start": f"01/01/{today.year}", "card_end": f"31/12/{today.year + 1}"}
    r = post(client, page, **card)
    assert post(client, page, **card).status_code == 200 and len(fake.coverages) == 1  # a double click: one card
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "Đã ghi thẻ" in page
    (path, body, key), again = fake.writes
    assert again == (path, body, key)  # the same request under the same key, answered once
    del fake.writes[1:]
    assert path == "/fhir/Coverage" and key.startswith("portal-coverage-")
    assert body["beneficiary"] == {"reference": "Patient/bn-0001"} and body["status"] == "active"
    assert body["identifier"] == [{"system": "https://fhir.sen.vn/sid/bhyt", "value": "DN4878701234569"}]
    assert body["extension"] == [{"url": "https://sen.vn/fhir/StructureDefinition/bhyt-benefit-level",
                                  "valueUnsignedInt": 80}]
    assert body["period"] == {"start": f"{today.year}-01-01", "end": f"{today.year + 1}-12-31"}
    assert re.search(r'data-testid="bhyt-level">80 %', page) and 'data-testid="card-form"' not in page
    # 3. services by name without accents; added twice is one line of 2
    page = post(client, page, service_q="xet nghiem", action="find-service").get_data(as_text=True)
    assert 'name="add" value="xn-cong-thuc-mau"' in page and 'name="add" value="kham-benh"' not in page
    page = post(client, page, add="xn-cong-thuc-mau").get_data(as_text=True)
    assert 'name="add" value="xn-cong-thuc-mau"' in page  # the search stays after an add
    page = post(client, page, add="xn-cong-thuc-mau").get_data(as_text=True)
    page = post(client, page, service_q="", action="find-service").get_data(as_text=True)  # the whole list
    assert 'name="add" value="kham-benh"' in page and 'name="add" value="ban-sao-ho-so"' in page
    page = post(client, page, add="kham-benh").get_data(as_text=True)
    assert lines_of(page) == [("xn-cong-thuc-mau", "2"), ("kham-benh", "1")]
    assert re.findall(r'data-testid="line-amount">([^<]*)<', page) == ["92.000\u00a0₫", "39.000\u00a0₫"]
    assert re.search(r'data-testid="lines-total"><strong>131.000\u00a0₫', page)
    # the review: one submit makes the charges, the invoice, $issue; then the invoice page
    r = post(client, page, action="issue")
    assert r.status_code == 302
    paths = [w[0] for w in fake.writes[1:]]
    assert paths == ["/fhir/ChargeItem", "/fhir/ChargeItem", "/fhir/Invoice", "/fhir/Invoice/inv-ci-1-ci-2/$issue"]
    first, second = fake.writes[1][1], fake.writes[2][1]
    assert first["definitionCanonical"] == ["ChargeItemDefinition/xn-cong-thuc-mau"]
    assert first["quantity"] == {"value": 2}
    assert second["definitionCanonical"] == ["ChargeItemDefinition/kham-benh"] and "priceOverride" not in second
    assert [li["chargeItemReference"]["reference"] for li in fake.writes[3][1]["lineItem"]] == \
        ["ChargeItem/ci-1", "ChargeItem/ci-2"]
    # the patient's name as the EHR gave it to the page: billing keeps it for the receipt it prints
    assert fake.writes[3][1]["subject"] == {"reference": "Patient/bn-0001", "display": "Nguyễn Thị Mai"}
    assert r.headers["Location"].startswith("/invoices/inv-ci-1-ci-2?") and "p=bn-0001" in r.headers["Location"]
    assert "issued" not in r.headers["Location"] and flashed_steps(client) == [("/invoices/inv-ci-1-ci-2", "issued=1")]


def _ready_to_issue(client, fake) -> str:
    """The page with a chosen patient and two lines, not submitted."""
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    page = post(client, page, add="kham-benh").get_data(as_text=True)
    return post(client, page, add="ban-sao-ho-so").get_data(as_text=True)


def test_a_resubmitted_form_makes_nothing_twice(client, fake):
    """The form's key makes every write's Idempotency-Key: the same submit twice (a double click, a retry
    on a slow link) sends the same keys and bodies, so billing (which honours them, as this fake does)
    answers the first ChargeItems again and the invoice of the same charges is the same one. A new form
    (a new key) is a new invoice."""
    sign_in(client)
    page = _ready_to_issue(client, fake)
    first = post(client, page, action="issue")
    again = post(client, page, action="issue")
    assert first.status_code == again.status_code == 302 and first.headers["Location"] == again.headers["Location"]
    sent = [(p, k) for p, _b, k in fake.writes]
    assert sent[:4] == sent[4:]  # the same requests under the same keys
    assert all(k.startswith(f"portal-{kind}-{input_value(page, 'key')}-") for (p, k), kind in
               zip(sent[:4], ("charge", "charge", "invoice", "issue"), strict=True))
    assert len(fake.charges) == 2 and len(fake.invoices) == 1
    # a quantity changed after a refusal is another request: a new key, never billing's 422 for a reused one
    changed = post(client, page, action="issue", line_qty=["3", "1"])
    assert changed.status_code == 302 and len(fake.charges) == 3 and len(fake.invoices) == 2
    # the same services for the same patient later: a new form, a new invoice
    fresh = _ready_to_issue(client, fake)
    assert input_value(fresh, "key") != input_value(page, "key")
    assert post(client, fresh, action="issue").status_code == 302 and len(fake.invoices) == 3


def test_an_ehr_that_does_not_answer_at_the_submit_leaves_the_name_off_not_the_invoice(client, fake, monkeypatch):
    """The name comes from the EHR read the submit makes anyway: without an answer the invoice is made
    unnamed (billing's receipt then names no one; the portal's receipt page asks the EHR again), under
    another key than the named one, so a retry that lost the name is never billing's 422."""
    from sen_portal.web import patients as patient_module

    sign_in(client)
    page = _ready_to_issue(client, fake)
    assert post(client, page, action="issue").status_code == 302
    named = fake.writes[-2]
    assert named[1]["subject"] == {"reference": "Patient/bn-0001", "display": "Nguyễn Thị Mai"}

    def down(*_a: Any, **_k: Any) -> Any:
        raise BackendError("unavailable", "ehr")

    monkeypatch.setattr(patient_module, "fhir_get", down)
    assert post(client, page, action="issue").status_code == 302
    unnamed = fake.writes[-2]
    assert unnamed[0] == "/fhir/Invoice" and unnamed[1]["subject"] == {"reference": "Patient/bn-0001"}
    assert unnamed[2] != named[2] and len(fake.invoices) == 1  # another request, the same invoice


def test_each_mistake_is_explained_on_the_form_which_keeps_its_lines(client, fake):
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    r = post(client, page, action="issue")  # nothing chosen, no line
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Hãy chọn người bệnh trước." in body and "Hãy thêm ít nhất một dịch vụ" in body
    page = post(client, page, add="kham-benh").get_data(as_text=True)
    r = post(client, page, action="issue")  # a line, still no patient: the line stays
    assert r.status_code == 422 and "Hãy chọn người bệnh trước." in r.get_data(as_text=True)
    assert lines_of(r.get_data(as_text=True)) == [("kham-benh", "1")]
    r = post(client, page, action="issue", patient="bn-9999")  # an id the EHR does not know (a forged form)
    assert r.status_code == 422 and "Hồ sơ sức khỏe không có người bệnh này" in r.get_data(as_text=True)
    assert not fake.writes and lines_of(r.get_data(as_text=True)) == [("kham-benh", "1")]
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    for typed in ("0", "1001", "abc", "2.5", ""):
        r = post(client, page, action="issue", line_qty=[typed])
        body = r.get_data(as_text=True)
        assert r.status_code == 422 and "Số lượng là số nguyên từ 1 đến 1000." in body, typed
        assert lines_of(body) == [("kham-benh", typed)] and 'aria-invalid="true"' in body
    assert not fake.writes  # nothing was sent for any of them
    r = post(client, page, action="issue", line_service=["kham-benh", "kham-benh"], line_qty=["1", "2"])
    assert r.status_code == 422 and "Dịch vụ này có hai dòng" in r.get_data(as_text=True)
    # a price list entry gone since the line was added
    del fake.prices["kham-benh"]
    r = post(client, page, action="issue")
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Dịch vụ này không còn trong bảng giá" in body and not fake.writes
    assert lines_of(body) == [("kham-benh", "1")]
    # ... or gone between the page's check and billing's (billing's 422 names the definition)
    fake.prices["kham-benh"] = definition("kham-benh", "Khám bệnh", 39000)
    real_get = fake.get

    def stale(service, path, params=None, **kw):
        answer = real_get(service, path, params, **kw)
        if path == "/fhir/ChargeItemDefinition":
            fake.prices.pop("kham-benh", None)  # retired right after the page read the list
        return answer
    fake.get = stale
    from sen_portal.web import charges
    charges.fhir_get = stale
    r = post(client, page, action="issue")
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Dịch vụ này không còn trong bảng giá" in body
    assert [w[0] for w in fake.writes] == ["/fhir/ChargeItem"] and lines_of(body) == [("kham-benh", "1")]
    charges.fhir_get = real_get
    fake.prices["kham-benh"] = definition("kham-benh", "Khám bệnh", 39000)
    # billing refusing (403) or not answering: its sentence, the lines kept
    fake.fail["/fhir/Invoice"] = BackendError("refused", "billing", 403, "forbidden")
    r = post(client, page, action="issue")
    body = r.get_data(as_text=True)
    assert r.status_code == 403 and "Dịch vụ thanh toán từ chối: bạn không có quyền làm việc này." in body
    assert lines_of(body) == [("kham-benh", "1")]
    fake.fail["/fhir/Invoice"] = BackendError("down", "billing")
    r = post(client, page, action="issue")
    assert r.status_code == 503 and "Hiện không kết nối được Dịch vụ thanh toán" in r.get_data(as_text=True)
    assert lines_of(r.get_data(as_text=True)) == [("kham-benh", "1")]
    del fake.fail["/fhir/Invoice"]
    assert post(client, page, action="issue").status_code == 302  # the retry goes through


def test_a_quantity_that_is_no_whole_number_is_said_beside_its_box_at_enter_too(client, fake):
    """Enter in a quantity box (the form's hidden "update") says a quantity not 1-1000 beside the box, not only
    the submit; the box keeps what was typed, has the numeric keypad, and gives app.js its bounds and the
    message to say as it is typed. Nothing is written."""
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, add="kham-benh").get_data(as_text=True)
    box = re.search(r'<input id="line-0-qty"[^>]*>', page).group(0)
    assert 'inputmode="numeric"' in box and 'data-min="1"' in box and 'data-max="1000"' in box
    assert 'aria-invalid' not in box
    assert re.search(r'<p class="error" id="line-0-qty-error"[^>]*data-message="Số lượng là số nguyên từ 1 đến '
                     r'1000."[^>]*></p>', page)  # empty: the quantity is fine
    for typed in ("2,5", "0", ""):
        r = post(client, page, action="enter", line_qty=[typed])
        body = r.get_data(as_text=True)
        assert r.status_code == 200 and lines_of(body) == [("kham-benh", typed)], typed
        box = re.search(r'<input id="line-0-qty"[^>]*>', body).group(0)
        assert 'aria-invalid="true"' in box and 'aria-describedby="line-0-qty-error"' in box, typed
        assert re.search(r'id="line-0-qty-error"[^>]*>Số lượng là số nguyên từ 1 đến 1000.</p>', body), typed
    assert not fake.writes


def test_the_card_form_refuses_what_billing_could_not_use(client, fake):
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    today = datetime.now(VN_TZ).date()  # the cards' validity is judged on Vietnam's date, not the server's
    cases = [({"card_number": "DN48787", "card_level": "80"}, "Mã thẻ BHYT gồm 2 chữ cái và 13 chữ số."),
             ({"card_number": "DN4878701234569", "card_level": ""}, "Hãy chọn mức hưởng in trên thẻ."),
             ({"card_start": f"01/01/{today.year}", "card_end": f"01/01/{today.year - 1}"}, "Thẻ hết hạn trước khi"),
             ({"card_start": f"01/01/{today.year - 2}",
               "card_end": (today - timedelta(days=1)).strftime("%d/%m/%Y")}, "Thẻ này đã hết hạn")]
    for data, message in cases:
        form = {"card_number": "DN4878701234569", "card_level": "80", "card_start": f"01/01/{today.year}",
                "card_end": f"31/12/{today.year}", **data}
        r = post(client, page, action="record-card", **form)
        body = r.get_data(as_text=True)
        assert r.status_code == 422 and message in body, message
        assert input_value(body, "card_number") == form["card_number"]  # what was typed is kept
    assert not fake.writes
    fake.fail["/fhir/Coverage"] = BackendError("refused", "billing", 422, "Coverage.payor: field required")
    r = post(client, page, action="record-card", card_number="DN4878701234569", card_level="80",
             card_start=f"01/01/{today.year}", card_end=f"31/12/{today.year}")
    body = r.get_data(as_text=True)  # a refusal the portal has no sentence for: the generic one, no English
    assert r.status_code == 422 and "Dịch vụ thanh toán từ chối yêu cầu. Hãy kiểm tra" in body  # billing's own
    assert "Coverage.payor" not in body


def test_a_down_billing_or_ehr_is_a_sentence_not_an_error_page(client):
    sign_in(client)
    page = client.get("/invoices/new")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "Hiện không kết nối được Dịch vụ thanh toán" in body
    r = post(client, body, who="nguyen van a", action="find-patient", line_service=["kham-benh"], line_qty=["2"])
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Hiện không kết nối được Dịch vụ hồ sơ sức khỏe" in body
    assert input_value(body, "who") == "nguyen van a" and lines_of(body) == [("kham-benh", "2")]
    r = post(client, body, action="issue", patient="bn-0001")
    assert r.status_code == 503 and lines_of(r.get_data(as_text=True)) == [("kham-benh", "2")]


def test_the_invoice_page_shows_the_bhyt_and_patient_shares(client, monkeypatch):
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module

    sd = "https://sen.vn/fhir/StructureDefinition/"

    def line(text_: str, base: int, insurer: int) -> dict[str, Any]:
        code = "urn:sen:billing:price-component"
        return {"chargeItemReference": {"reference": "ChargeItem/x", "display": text_}, "priceComponent": [
            {"type": "base", "amount": {"value": base, "currency": "VND"}},
            {"type": "deduction", "code": {"coding": [{"system": code, "code": "insurer-share"}]},
             "amount": {"value": insurer, "currency": "VND"}},
            {"type": "informational", "code": {"coding": [{"system": code, "code": "patient-share"}]},
             "amount": {"value": base - insurer, "currency": "VND"}}]}

    invoice = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-05T09:00:00+07:00",
               "subject": {"reference": "Patient/bn-0001"}, "totalGross": {"value": 384000, "currency": "VND"},
               "extension": [{"url": sd + "patient-share", "valueMoney": {"value": 92800, "currency": "VND"}},
                             {"url": sd + "insurer-share", "valueMoney": {"value": 291200, "currency": "VND"}},
                             {"url": sd + "bhyt-benefit-level", "valueUnsignedInt": 80},
                             {"url": sd + "bhyt-applied-percent", "valueUnsignedInt": 80}],
               "lineItem": [line("Chụp X-quang ngực thẳng", 325000, 260000), line("Khám bệnh", 39000, 31200),
                            line("Sao y hồ sơ bệnh án", 20000, 0)]}

    def desk(service, path, params=None, **_kw):
        return {"status": "issued", "owed": 92800, "paid": 0, "balanceDue": 92800, "reference": "HD7K2M9QX4C",
                "resource": invoice, "qr": None}

    monkeypatch.setattr(cashier, "shared_get", desk)
    monkeypatch.setattr(patient_module, "fhir_get", lambda *a, **k: FakeBilling.bundle([MAI]))
    sign_in(client)
    flash_step(client, "/invoices/inv-a", "issued")
    page = client.get("/invoices/inv-a?p=bn-0001").get_data(as_text=True)
    assert "Đã phát hành hóa đơn: người bệnh có thể thanh toán ngay." in page
    assert re.search(r'BHYT chi trả \(80 %\)</dt><dd class="money" data-testid="insurer-share">291.200\u00a0₫',
                     page)
    assert re.search(r'data-testid="patient-share">92.800\u00a0₫', page)
    assert re.findall(r'data-testid="line-shares">([^<]*)<', page) == [
        "BHYT 260.000\u00a0₫ · người bệnh 65.000\u00a0₫", "BHYT 31.200\u00a0₫ · người bệnh 7.800\u00a0₫"]
    invoice["extension"][3]["valueUnsignedInt"] = 100  # a small visit: covered in full whatever the card says
    page = client.get("/invoices/inv-a?p=bn-0001").get_data(as_text=True)
    assert re.search(r"BHYT chi trả \(100 %\) <small class=\"hint\">thẻ 80 %: chi trả toàn bộ vì dưới mức quy định"
                     r"</small></dt>", page)
    english(client)
    page = client.get("/invoices/inv-a?p=bn-0001").get_data(as_text=True)
    assert "BHYT pays (100 %)" in page and "card 80 %: in full below the threshold" in page
    assert "Patient pays" in page and "issued:" not in page
    del invoice["extension"][2:]  # no card: the patient pays it all, the amounts owed say so already
    page = client.get("/invoices/inv-a?p=bn-0001").get_data(as_text=True)
    assert 'data-testid="insurer-share"' not in page and "Patient pays" not in page


# --------------------------------------------------------------------------- charges not yet invoiced

def post_all(client, page: str, **data: Any) -> Any:
    """As :func:`post`, with the list of charges not yet invoiced as the browser posts it: every one
    shown (``pending_seen``), the ticked ones (``pending``), and the charges this form made (``made``)."""
    form = {"pending_seen": re.findall(r'name="pending_seen" value="([^"]*)"', page),
            "pending": re.findall(r'name="pending" value="([^"]*)"[^>]*checked', page),
            "made": re.findall(r'name="made" value="([^"]*)"', page)}
    return post(client, page, **{**form, **data})


def pending_of(page: str) -> list[tuple[str, bool]]:
    return [(cid, bool(ticked)) for cid, ticked in
            re.findall(r'name="pending" value="([^"]*)"[^>]*?( checked)?>', page)]


def invoice_lines(fake, iid: str) -> list[str]:
    return sorted(li["chargeItemReference"]["reference"][11:] for li in fake.invoices[iid]["lineItem"])


def hand_charge(fake, cid: str, service: str = "xn-cong-thuc-mau", qty: int = 1) -> None:
    """A charge made at billing's API by hand (no invoice), as billing stores it."""
    fake.charges[cid] = {"resourceType": "ChargeItem", "id": cid, "status": "billable",
                         "code": {"text": fake.prices[service]["title"]}, "subject": {"reference": "Patient/bn-0001"},
                         "definitionCanonical": [f"https://sen.vn/fhir/ChargeItemDefinition/{service}|1"],
                         "quantity": {"value": qty}, "enteredDate": "2026-12-04T16:05:00+07:00",
                         "priceOverride": {"value": fake.price(service) * qty, "currency": "VND"}}


def test_charges_not_yet_invoiced_are_listed_ticked_and_go_on_the_new_invoice(client, fake):
    sign_in(client)
    hand_charge(fake, "ci-hand", qty=2)
    page = client.get("/invoices/new").get_data(as_text=True)
    assert 'data-testid="pending"' not in page  # no patient yet: nothing to list
    page = post_all(client, page, choose="bn-0001").get_data(as_text=True)
    assert "Dịch vụ chưa lập hóa đơn" in page and pending_of(page) == [("ci-hand", True)]
    row = text(page[page.index('data-testid="pending-charge"'):page.index("</tr>", page.index("pending-charge"))])
    assert "Xét nghiệm tổng phân tích tế bào máu" in row and "04/12/2026 16:05" in row and "92.000 ₫" in row
    assert re.search(r'data-testid="pending-total">92.000\u00a0₫', page)
    page = post_all(client, page, add="kham-benh").get_data(as_text=True)
    assert pending_of(page) == [("ci-hand", True)]  # still ticked after another post
    assert re.search(r'data-testid="invoice-total"><strong>131.000\u00a0₫', page)  # 92.000 + 39.000
    r = post_all(client, page, action="issue")
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]
    (iid,) = fake.invoices
    assert invoice_lines(fake, iid) == ["ci-2", "ci-hand"]  # ONE invoice: the new line and the charge left over
    assert r.headers["Location"].startswith(f"/invoices/{iid}?")
    assert post_all(client, page, action="issue").headers["Location"] == r.headers["Location"]  # a double click
    assert len(fake.invoices) == 1
    page = post_all(client, client.get("/invoices/new").get_data(as_text=True), choose="bn-0001").get_data(as_text=True)
    assert 'data-testid="no-pending"' in page and pending_of(page) == []
    english(client)
    hand_charge(fake, "ci-hand-2", "kham-benh")
    page = post_all(client, client.get("/invoices/new").get_data(as_text=True), choose="bn-0001").get_data(as_text=True)
    assert "Charges not yet invoiced" in page and "Put Khám bệnh on this invoice" in page
    # only the charge left over, no new line: an invoice of it alone
    r = post_all(client, page, action="issue")
    assert r.status_code == 302 and len(fake.invoices) == 2
    assert ["ci-hand-2"] in [invoice_lines(fake, i) for i in fake.invoices]


def test_an_unticked_charge_stays_for_later(client, fake):
    sign_in(client)
    hand_charge(fake, "ci-hand")
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post_all(client, page, choose="bn-0001").get_data(as_text=True)
    page = post_all(client, page, add="kham-benh", pending=[]).get_data(as_text=True)  # the cashier unticks it
    assert pending_of(page) == [("ci-hand", False)] and 'data-testid="pending-total"' not in page
    r = post_all(client, page, action="issue")
    assert r.status_code == 302 and [invoice_lines(fake, i) for i in fake.invoices] == [["ci-2"]]
    page = post_all(client, client.get("/invoices/new").get_data(as_text=True), choose="bn-0001").get_data(as_text=True)
    assert pending_of(page) == [("ci-hand", True)]  # listed again, ticked, on the next invoice


def test_a_submit_refused_part_way_leaves_no_charge_unseen(client, fake):
    """The Invoice create refused after the lines' ChargeItems were made: the same form resubmitted
    puts them on the invoice once (they are its lines, not listed twice); a line changed meanwhile
    leaves its earlier charge listed, unticked; a new form lists every one left, ticked."""
    sign_in(client)
    page = _ready_to_issue(client, fake)  # kham-benh, ban-sao-ho-so
    fake.fail["/fhir/Invoice"] = BackendError("refused", "billing", 403, "forbidden")
    r = post_all(client, page, action="issue")
    page = r.get_data(as_text=True)
    assert r.status_code == 403 and sorted(fake.charges) == ["ci-1", "ci-2"] and not fake.invoices
    assert re.findall(r'name="made" value="([^"]*)"', page) == ["ci-1", "ci-2"]
    assert pending_of(page) == [] and lines_of(page) == [("kham-benh", "1"), ("ban-sao-ho-so", "1")]
    del fake.fail["/fhir/Invoice"]
    # the cashier raises the examination to 2: its charge of 1 is not what they charge now
    changed = post_all(client, page, action="enter", line_qty=["2", "1"]).get_data(as_text=True)
    assert pending_of(changed) == [("ci-1", False)] and "Tạo trong lần lập trước của hóa đơn này" in changed
    r = post_all(client, changed, action="issue")
    assert r.status_code == 302
    (iid,) = fake.invoices
    assert invoice_lines(fake, iid) == ["ci-2", "ci-3"]  # the line of 2 (new) and the copy (answered again)
    page = post_all(client, client.get("/invoices/new").get_data(as_text=True), choose="bn-0001").get_data(as_text=True)
    assert pending_of(page) == [("ci-1", True)]  # the examination of 1 is not lost: listed on a new form
    # unchanged, the same form resubmitted: each charge once on one invoice
    page = _ready_to_issue(client, fake)
    fake.fail["/fhir/Invoice"] = BackendError("down", "billing")
    page = post_all(client, page, action="issue").get_data(as_text=True)
    del fake.fail["/fhir/Invoice"]
    assert pending_of(page) == [("ci-1", True)]  # the one from before; this form's own are its lines
    r = post_all(client, page, action="issue")
    assert r.status_code == 302 and len(fake.invoices) == 2
    assert invoice_lines(fake, r.headers["Location"].split("/")[2].split("?")[0]) == ["ci-1", "ci-4", "ci-5"]


def test_a_billing_that_cannot_list_them_is_a_sentence(client, fake):
    sign_in(client)
    fake.fail["/fhir/ChargeItem"] = BackendError("down", "billing")
    page = client.get("/invoices/new").get_data(as_text=True)
    r = post_all(client, page, choose="bn-0001")
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "Dịch vụ chưa lập hóa đơn" in body
    assert "Hiện không kết nối được Dịch vụ thanh toán" in body and 'data-testid="bhyt-card"' not in body
    assert 'data-testid="no-card"' in body  # the card part, read apart, still shows


def test_a_price_changed_after_the_page_showed_it_is_flagged_before_the_invoice_is_issued(client, fake):
    """The cashier's lines showed 39.000 ₫; an admin saves 45.000 meanwhile. The submit charges nothing:
    the line says the price changed (from what to what), the page shows the new price and total; the
    cashier issues again and the invoice is made."""
    sign_in(client)
    page = _ready_to_issue(client, fake)
    shown = re.findall(r'name="line_price" value="([^"]*)"', page)
    assert shown == ["39000", "20000"]  # the unit prices the page showed, posted with the form
    fake.prices["kham-benh"]["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = 45000
    r = post(client, page, action="issue", line_price=shown)
    again = r.get_data(as_text=True)
    assert r.status_code == 422 and fake.writes == []  # nothing charged at the old or the new price unseen
    assert "Giá đã đổi từ 39.000\u00a0₫ thành 45.000\u00a0₫" in again
    assert re.findall(r'name="line_price" value="([^"]*)"', again) == ["45000", "20000"]
    assert re.search(r'data-testid="lines-total"><strong>65.000\u00a0₫', again)
    r = post(client, again, action="issue", line_price=re.findall(r'name="line_price" value="([^"]*)"', again))
    assert r.status_code == 302 and len(fake.invoices) == 1


def own_address(page: str) -> str:
    m = re.search(r'<script src="/assets/own-address\.js\?v=\w+" data-address="([^"]*)" defer>', page)
    assert m, "no own address"
    return m.group(1).replace("&amp;", "&")


def test_a_reload_or_back_keeps_the_lines_added(client, fake):
    """Review 4: the address the page took in the history (/invoices/new?p=...) kept the patient but not
    the lines, so a reload showed "no line yet" and the submit said to add a service. The address holds the
    lines now, and its GET shows the same draft, as the POST would have it; nothing is written."""
    sign_in(client)
    page = _ready_to_issue(client, fake)
    page = post(client, page, line_qty=["2", "1"], action="enter").get_data(as_text=True)
    address = own_address(page)
    assert address.startswith("/invoices/new?") and "p=bn-0001" in address
    r = client.get(address)  # the reload (or Back from the invoice page)
    again = r.get_data(as_text=True)
    assert r.status_code == 200 and not fake.writes
    assert input_value(again, "patient") == "bn-0001"
    assert lines_of(again) == [("kham-benh", "2"), ("ban-sao-ho-so", "1")]
    assert re.findall(r'data-testid="line-amount">([^<]*)<', again) == ["78.000\u00a0₫", "20.000\u00a0₫"]
    assert 'data-testid="no-lines"' not in again and 'data-testid="lines-left-out"' not in again
    assert own_address(post(client, again, action="enter").get_data(as_text=True)) == address  # the same draft
    r = post(client, again, action="issue")  # and it issues, as the page before the reload would have
    assert r.status_code == 302 and [w[0] for w in fake.writes][-2:] == ["/fhir/Invoice",
                                                                           "/fhir/Invoice/inv-ci-1-ci-2/$issue"]
    assert fake.writes[0][1]["quantity"] == {"value": 2}


@pytest.mark.parametrize(("query", "kept", "said"), [
    ("line_service=kham-benh&line_qty=1&line_service=khong-co&line_qty=1", [("kham-benh", "1")],
     "khong-co: không có trong bảng giá"),
    ("line_service=kham-benh&line_qty=abc&line_service=ban-sao-ho-so&line_qty=2", [("ban-sao-ho-so", "2")],
     "Khám bệnh: số lượng “abc” không phải số nguyên từ 1 đến 1000"),
    ("line_service=kham-benh&line_qty=0", [], "Khám bệnh: số lượng “0”"),
    ("line_service=kham-benh&line_qty=1&line_service=kham-benh&line_qty=3", [("kham-benh", "1")],
     "Khám bệnh: có hai dòng"),
    ("line_service=%3Cscript%3E&line_qty=1", [], "1 dòng khác mà biểu mẫu không nhận"),
    ("line_service=kham-benh", [("kham-benh", "1")], None),
])
def test_a_line_the_form_would_refuse_in_the_address_is_left_out_and_said(client, fake, query, kept, said):
    sign_in(client)
    r = client.get(f"/invoices/new?p=bn-0001&{query}")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and lines_of(page) == kept and not fake.writes
    note = re.search(r'data-testid="lines-left-out">([^<]*)<', page)
    if said is None:
        assert note is None
    else:
        assert note and said in note.group(1).replace("&#34;", '"'), note and note.group(1)
        assert "Các dòng trong địa chỉ trang đã bị bỏ ra" in note.group(1)


def test_lines_in_the_address_when_billing_is_down_stay_and_are_checked_at_the_submit(client, fake):
    sign_in(client)
    fake.fail["/fhir/ChargeItemDefinition"] = BackendError("down", "billing")
    page = client.get("/invoices/new?p=bn-0001&line_service=kham-benh&line_qty=2").get_data(as_text=True)
    assert lines_of(page) == [("kham-benh", "2")] and 'data-testid="lines-left-out"' not in page


@pytest.mark.parametrize(("status", "said"), [(403, "Dịch vụ thanh toán từ chối: bạn không có quyền làm việc này."),
                                              (404, "Dịch vụ thanh toán không có hồ sơ này."),
                                              (409, "Dịch vụ thanh toán từ chối vì hồ sơ vừa được thay đổi"),
                                              (422, "Dịch vụ thanh toán từ chối yêu cầu. Hãy kiểm tra")])
def test_billing_refusing_the_card_or_the_invoice_gives_its_own_status(client, fake, status, said):
    """Billing refusing the BHYT card or the invoice was a 409 page whatever it answered: now its own status
    (backend.page_status: a 404 is a 404, a 403 a 403), said in words; the invoice's lines kept."""
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    today = datetime.now(VN_TZ).date()
    fake.fail["/fhir/Coverage"] = BackendError("refused", "billing", status, "refused")
    r = post(client, page, action="record-card", card_number="DN4878701234569", card_level="80",
             card_start=f"01/01/{today.year}", card_end=f"31/12/{today.year}")
    body = r.get_data(as_text=True)
    assert r.status_code == status and said in text(body) and "Traceback" not in body
    page = post(client, page, add="kham-benh").get_data(as_text=True)
    fake.fail["/fhir/Invoice"] = BackendError("refused", "billing", status, "refused")
    r = post(client, page, action="issue")
    body = r.get_data(as_text=True)
    assert r.status_code == status and said in text(body) and lines_of(body) == [("kham-benh", "1")]
    assert not fake.invoices


def card_box(page: str) -> str:
    m = re.search(r'<fieldset[^>]*data-testid="card-form".*?</fieldset>', page, re.S)
    return m.group(0) if m else ""


@pytest.mark.parametrize(("status", "lang", "said"), [
    (422, "vi", "Dịch vụ thanh toán từ chối yêu cầu. Hãy kiểm tra"),
    (422, "en", "The billing service refused the request: the card has expired"),
    (403, "vi", "Dịch vụ thanh toán từ chối: bạn không có quyền làm việc này."),
    (403, "en", "The billing service refused: you are not allowed to do this."),
    (409, "vi", "Dịch vụ thanh toán từ chối vì hồ sơ vừa được thay đổi")])
@pytest.mark.parametrize("listed", [True, False], ids=["cards-listed", "cards-unlisted"])
def test_a_card_billing_refuses_stays_typed_with_the_refusal_in_its_box(client, fake, monkeypatch, status, lang,
                                                                        said, listed):
    """Billing refusing the card (expired, unknown benefit, another facility's) left the page without what the
    cashier typed when billing's list of the patient's cards failed too (the card box was offered only beside
    that list): a 15-character card to type again. Now the refused page keeps every card field as typed,
    billing's status, and the refusal said in the card box, whether or not the list is read."""
    from sen_portal.web import charges

    sign_in(client)
    if lang == "en":
        english(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    year = datetime.now(VN_TZ).date().year
    refusal = BackendError("refused", "billing", status, "the card has expired")
    if listed:  # only the card's write refused: billing lists the patient's cards
        def refusing(service: str, method: str, path: str, **kw: Any) -> Any:
            if path == "/fhir/Coverage":
                fake.writes.append((path, kw.get("json"), ""))
                raise refusal
            return fake.call(service, method, path, **kw)

        monkeypatch.setattr(charges, "call", refusing)
    else:  # the list of the patient's cards fails as well
        fake.fail["/fhir/Coverage"] = refusal
    typed = {"card_number": "HT2878701234567", "card_level": "95", "card_start": f"02/03/{year}",
             "card_end": f"30/06/{year + 1}"}
    r = post(client, page, action="record-card", **typed)
    body = r.get_data(as_text=True)
    box = card_box(body)
    assert r.status_code == status and "Traceback" not in body
    assert [w[0] for w in fake.writes] == ["/fhir/Coverage"] and not fake.coverages
    for name in ("card_number", "card_start", "card_end"):
        assert input_value(box, name) == typed[name], name
    assert re.search(r'<option selected value="95">', box)
    problem = re.search(r'data-testid="card-problem"[^>]*>([^<]*)<', box)
    assert problem and said in problem.group(1)
    assert body.count(said) == (1 if listed else 2)  # the list's own failure says it once more, above the box
    # the card typed again from the refused page (billing now takes it): recorded, the box gone
    monkeypatch.setattr(charges, "call", fake.call)
    fake.fail.clear()
    r = post(client, body, action="record-card", **{k: input_value(box, k) for k in typed if k != "card_level"},
             card_level="95")
    assert r.status_code == 200 and len(fake.coverages) == 1
    assert fake.coverages[0]["subscriberId"] == "HT2878701234567"
    assert fake.coverages[0]["period"] == {"start": f"{year}-03-02", "end": f"{year + 1}-06-30"}


def test_every_button_of_the_form_is_sent_in_place_and_says_a_lost_answer_under_its_part(client, fake):
    """Session 30: the form's last buttons the browser posted (find the patient, choose, add or remove a line,
    record the card, Enter in a box) are sent in place like its issue (_form.html's mechanism): each names the
    "not sent" box of its part of the form, Enter the form's own; without JavaScript the form posts as before."""
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    page = post(client, page, who="nguyen thi mai", action="find-patient").get_data(as_text=True)
    form = re.search(r'<form method="post" action="/invoices/new"[^>]*>', page).group(0)
    assert 'hx-post="/invoices/new"' in form and 'data-live-error="charge-live-error"' in form
    assert 'hx-history="false"' in form  # no copy of a patient's page in the browser's storage
    for button, live in (('value="find-patient"', "patient-live-error"), ('name="choose"', "patient-live-error")):
        tag = re.search(rf'<button[^>]*{button}[^>]*>', page).group(0)
        assert 'hx-post="/invoices/new"' in tag and f'data-live-error="{live}"' in tag, tag
    page = post(client, page, choose="bn-0001").get_data(as_text=True)
    page = post(client, page, service_q="kham", action="find-service").get_data(as_text=True)
    page = post(client, page, add="kham-benh").get_data(as_text=True)
    for button, live in (('value="record-card"', "charge-card-live-error"), ('name="add"', "services-live-error"),
                         ('name="remove"', "lines-live-error"), ('value="change-patient"', "patient-live-error"),
                         ('value="issue"', "issue-live-error")):
        tag = re.search(rf'<button[^>]*{button}[^>]*>', page).group(0)
        assert 'hx-post="/invoices/new"' in tag and f'data-live-error="{live}"' in tag, tag
        assert re.search(rf'<div id="{live}" class="alert error" role="alert" hidden>', page), live
    assert re.search(r'<div id="charge-live-error" class="alert error" role="alert" hidden>', page)


def test_the_forms_buttons_sent_in_place_answer_the_page_at_the_drafts_address(client, fake):
    """Sent in place, every answer is the page (htmx swaps its main; a refusal is said in it: 200, as the
    form's other answers sent in place) and names the draft's address (HX-Replace-Url: a reload or Back shows
    it); the card sent again after its answer was lost is recorded once (the form's key)."""
    sign_in(client)
    page = client.get("/invoices/new").get_data(as_text=True)
    hx = {"HX-Request": "true"}

    def sent(**data: Any) -> Any:
        form: dict[str, Any] = {"csrf_token": csrf_token(page), "key": input_value(page, "key"),
                                "patient": input_value(page, "patient"), "who": input_value(page, "who"),
                                "service_q": input_value(page, "service_q"),
                                "line_service": re.findall(r'name="line_service" value="([^"]*)"', page),
                                "line_qty": re.findall(r'name="line_qty" value="([^"]*)"', page), **data}
        return client.post("/invoices/new", data=form, headers=hx)

    r = sent(who="x", action="find-patient")  # too short: 422 to a browser, the page with its message to htmx
    assert r.status_code == 200 and r.headers["HX-Replace-Url"] == "/invoices/new"
    assert "Nhập từ 2 đến 100 ký tự." in r.get_data(as_text=True)
    page = sent(choose="bn-0001").get_data(as_text=True)
    r = sent(add="kham-benh")
    assert r.status_code == 200
    assert r.headers["HX-Replace-Url"] == "/invoices/new?p=bn-0001&line_service=kham-benh&line_qty=1"
    page = r.get_data(as_text=True)
    assert lines_of(page) == [("kham-benh", "1")] and "own-address.js" not in page  # the address is htmx's
    today = datetime.now(VN_TZ).date()
    card = {"action": "record-card", "card_number": "DN4878701234569", "card_level": "80",
            "card_start": f"01/01/{today.year}", "card_end": f"31/12/{today.year + 1}"}
    first, again = sent(**card), sent(**card)  # the first's answer lost: the same form sent again
    assert first.status_code == again.status_code == 200 and len(fake.coverages) == 1
    assert "Đã ghi thẻ" in again.get_data(as_text=True)
    fake.fail["/fhir/Coverage"] = BackendError("refused", "billing", 422, "Coverage.payor: field required")
    r = sent(**{**card, "card_level": "95"})
    assert r.status_code == 200 and 'data-testid="card-problem"' in r.get_data(as_text=True)


def test_the_price_list_kept_for_the_user_is_listed_once_and_follows_the_language_and_a_new_answer(
        tmp_path, monkeypatch, fake):
    """The price list answer kept for the cashier (SEN_PORTAL_CACHE_SECONDS, backend.AnswerCache) is made into the
    form's listing once per language (charges._listings), not on every render; the page still shows the English
    name on an English page and not on a Vietnamese one, and a new answer (the kept one ended, a price changed
    meanwhile) is listed anew: the new price."""
    from sen_portal.web import backend, charges, prices

    monkeypatch.setattr(charges, "fhir_get", backend.fhir_get)  # the real one: answers kept for the user

    def call(service: str, method: str, path: str, *, params: Any = None, **kw: Any) -> Any:
        return Answer(fake.get(service, path, params)) if method == "GET" else fake.call(service, method, path, **kw)

    monkeypatch.setattr(backend, "call", call)
    made: list[str] = []
    row = prices.row
    monkeypatch.setattr(prices, "row", lambda res: made.append(res["id"]) or row(res))
    with portal_app(tmp_path, monkeypatch, SEN_PORTAL_CACHE_SECONDS="60").test_client() as c:
        sign_in(c)
        address = "/invoices/new?line_service=kham-benh&line_qty=2"

        def shown() -> tuple[list[str], bool]:
            page = c.get(address).get_data(as_text=True)
            return (re.findall(r'data-testid="line-amount">([^<]*)<', page),
                    '<small class="hint">Medical examination</small>' in page)

        assert shown() == (["78.000\u00a0₫"], False)
        listed = len(made)
        assert listed == 3
        assert shown() == (["78.000\u00a0₫"], False) and len(made) == listed  # the same answer: listed once
        english(c)
        assert shown() == (["78.000\u00a0₫"], True) and len(made) == 2 * listed  # in English: listed again
        assert shown() == (["78.000\u00a0₫"], True) and len(made) == 2 * listed
        c.post("/language", data={"lang": "vi", "next": "/", "csrf_token": csrf_token(c.get(address).get_data(
            as_text=True))})
        assert shown() == (["78.000\u00a0₫"], False) and len(made) == 2 * listed  # Vietnamese again: the first
        fake.prices["kham-benh"]["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = 45000
        backend.answers.clear()  # the kept answer ended (SEN_PORTAL_CACHE_SECONDS): billing asked again
        assert shown() == (["90.000\u00a0₫"], False) and len(made) == 3 * listed
