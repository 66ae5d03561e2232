"""What the pages say, checked against the browser suite's screenshots: no program id where people read a
name, no label that says something else than what happened, numbers and weeks written the way the page's
language writes them. No back-end runs: the calls the pages make are replaced by canned answers (the
dead-backend fixture of test_pages.py)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from tests.support import portal_app


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with portal_app(tmp_path, monkeypatch).test_client() as c:
        yield c


def csrf(page: str) -> str:
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page)
    assert m, "no CSRF token on the page"
    return m.group(1)


def sign_in(client, user: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"username": user, "password": f"sen-{user}", "csrf_token": csrf(page)})


def english(client, path: str) -> None:
    token = csrf(client.get(path).get_data(as_text=True))
    client.post("/language", data={"lang": "en", "next": path, "csrf_token": token})


def bundle(resources):
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def names(monkeypatch) -> None:
    from sen_portal.web import directory

    monkeypatch.setattr(directory, "names", lambda rtype: {
        "Organization": {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp", "bvdk-dong-thap": "Bệnh viện Đa khoa Đồng Tháp"},
        "Practitioner": {"bs-nguyen-van-an": "Nguyễn Văn An"}}[rtype])


def test_the_receipt_names_the_facility_not_its_id(client, monkeypatch):
    """vi/en-1280-cashier-receipt: 'Cơ sở: tyt-my-hiep' (billing's id of the facility); the receipt names it
    from the EHR, and shows the id only when the EHR does not answer."""
    from sen_portal.web import cashier, directory

    receipt = {"number": "TYT-MY-HIEP-2026-000001", "invoice": "inv-a", "facility": "tyt-my-hiep",
               "owed": 150000, "paid": 150000, "credit": 0, "settledAt": "2026-12-05T08:28:00+07:00"}
    monkeypatch.setattr(cashier, "_json", lambda method, path, *a, **kw: receipt)
    names(monkeypatch)
    sign_in(client, "cashier")
    page = client.get("/invoices/inv-a/receipt").get_data(as_text=True)
    assert '<dd data-testid="receipt-facility">Trạm Y tế xã Mỹ Hiệp</dd>' in page
    assert "tyt-my-hiep" not in page.lower().replace("tyt-my-hiep-2026", "")  # the receipt's number keeps it
    monkeypatch.setattr(directory, "names", lambda rtype: {})  # the EHR not answering: the id, not an empty row
    page = client.get("/invoices/inv-a/receipt").get_data(as_text=True)
    assert '<dd data-testid="receipt-facility">tyt-my-hiep</dd>' in page


def test_the_receipt_says_what_was_paid_for_and_by_whom(client, monkeypatch):
    """vi/en-1280-cashier-receipt: facility, date and amounts only; billing's receipt now gives its lines
    and the patient's name (when the invoice carries it), and the page lists them as the printed copy does."""
    from sen_portal.web import cashier

    receipt = {"number": "TYT-MY-HIEP-2026-000001", "invoice": "inv-a", "facility": "tyt-my-hiep",
               "owed": 189000, "paid": 189000, "credit": 0, "settledAt": "2026-12-05T08:28:00+07:00",
               "patient": "Nguyễn Văn A", "lines": [{"text": "Hội chẩn từ xa", "patientShare": 150000},
                                                    {"text": "Khám bệnh", "patientShare": 39000}]}
    monkeypatch.setattr(cashier, "_json", lambda method, path, *a, **kw: receipt)
    names(monkeypatch)
    sign_in(client, "cashier")
    page = client.get("/invoices/inv-a/receipt").get_data(as_text=True)
    assert '<dt>Người bệnh</dt><dd data-testid="receipt-patient">Nguyễn Văn A</dd>' in page
    rows = re.findall(r'data-testid="line-title">([^<]*)</td>.*?data-label="Người bệnh trả" class="money">([^<]*)</td>',
                      page)
    assert rows == [("Hội chẩn từ xa", "150.000\u00a0₫"), ("Khám bệnh", "39.000\u00a0₫")]


def test_a_receipt_billing_keeps_no_name_for_names_the_patient_from_the_ehr(client, monkeypatch):
    """A consult's invoice carries no patient name, so neither does billing's receipt: the page names the
    patient as the invoice page does (the Invoice's subject, one EHR search with the cashier's token); the
    EHR not answering leaves the row out, never an error page."""
    from sen_portal.web import cashier
    from sen_portal.web import patients as patient_module

    receipt = {"number": "TYT-MY-HIEP-2026-000002", "invoice": "inv-b", "facility": "tyt-my-hiep",
               "owed": 150000, "paid": 150000, "credit": 0, "settledAt": "2026-12-05T08:28:00+07:00",
               "lines": [{"text": "Hội chẩn từ xa", "patientShare": 150000}]}
    monkeypatch.setattr(cashier, "_json", lambda method, path, *a, **kw: receipt)
    monkeypatch.setattr(cashier, "shared_get", lambda service, path, *a, **kw: {
        "status": "balanced", "resource": {"resourceType": "Invoice", "id": "inv-b",
                                           "subject": {"reference": "Patient/p1"}}})
    monkeypatch.setattr(patient_module, "fhir_get", lambda service, path, params=None, **kw: bundle([
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Lê", "given": ["Văn", "Cường"]}]}]))
    names(monkeypatch)
    sign_in(client, "cashier")
    page = client.get("/invoices/inv-b/receipt").get_data(as_text=True)
    assert '<dt>Người bệnh</dt><dd data-testid="receipt-patient">Lê Văn Cường</dd>' in page

    def down(*_a, **_kw):
        raise patient_module.BackendError("unreachable", "ehr", 0, "down")

    monkeypatch.setattr(patient_module, "fhir_get", down)
    r = client.get("/invoices/inv-b/receipt")
    assert r.status_code == 200 and 'data-testid="receipt-patient"' not in r.get_data(as_text=True)


def _consult(monkeypatch, status: str) -> None:
    from sen_portal.web import clinic, doctor
    from sen_portal.web import patients as patient_module

    task = {"resourceType": "Task", "id": "t1", "status": status, "priority": "urgent", "intent": "order",
            "authoredOn": "2026-12-05T08:27:00+07:00", "executionPeriod": {"start": "2026-12-05T08:28:00+07:00"},
            "for": {"reference": "Patient/p1"}, "focus": {"reference": "ServiceRequest/sr1"},
            "requester": {"reference": "Organization/tyt-my-hiep"},
            "owner": {"reference": "Practitioner/bs-nguyen-van-an"}}
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/p1"}, "note": [{"text": "Xin ý kiến tuyến trên."}]}

    def fhir_get(service, path, params=None, **_kw):
        if (service, path) == ("teleconsult", "/fhir/Task"):
            return bundle([task, sr])
        if (service, path) == ("ehr", "/fhir/Patient"):
            return bundle([{"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-05-20",
                            "name": [{"family": "Lê", "given": ["Văn", "Cường"]}]}])
        return bundle([])

    for module in (doctor, clinic, patient_module):
        monkeypatch.setattr(module, "fhir_get", fhir_get)
    names(monkeypatch)


def _started_row(page: str) -> tuple[str, str]:
    m = re.search(r'<dt>([^<]*)</dt><dd data-testid="task-(?:started|accepted)">([^<]*)</dd>', page)
    assert m, "no start row on the page"
    return m.group(1), m.group(2)


@pytest.mark.parametrize("user,path", [("doctor", "/tasks/t1"), ("clinic", "/consults/t1")])
def test_an_accepted_consult_says_when_it_was_accepted_not_started(client, monkeypatch, user, path):
    """vi-1280-doctor-slots, vi-1280-doctor-visit-moved: an accepted consult read 'Bắt đầu lúc 08:28' above
    the 'Bắt đầu khám' button (the time is the acceptance's: teleconsult stamps executionPeriod.start when a
    doctor accepts, and again when they start). Accepted: 'Nhận ca lúc'; in progress: 'Bắt đầu lúc'."""
    _consult(monkeypatch, "accepted")
    sign_in(client, user)
    assert _started_row(client.get(path).get_data(as_text=True)) == ("Nhận ca lúc", "05/12/2026 08:28")
    english(client, path)
    assert _started_row(client.get(path).get_data(as_text=True)) == ("Accepted at", "05/12/2026 08:28")
    _consult(monkeypatch, "in-progress")
    assert _started_row(client.get(path).get_data(as_text=True)) == ("Started", "05/12/2026 08:28")


def test_the_charts_measurements_have_the_pages_decimal_mark(client, monkeypatch):
    """vi-1280-clinic-chart-observations: the weight axis read '61,8' and the table beside it '61.5 kg';
    a Vietnamese page writes 61,5 kg, an English one 61.5 kg."""
    from sen_portal.web import clinic

    def weight(day: str, kg: float):
        return {"resourceType": "Observation", "id": f"w{day}", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Cân nặng"},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": f"2026-11-{day}T08:00:00+07:00",
                "valueQuantity": {"value": kg, "unit": "kg"}}

    everything = bundle([{"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1985-07-14",
                          "name": [{"family": "Trương", "given": ["Quốc", "Đạt"]}]},
                         weight("13", 62.0), weight("20", 61.5), weight("27", 1061.25)])
    monkeypatch.setattr(clinic, "fhir_get", lambda *a, **kw: everything)
    sign_in(client, "clinic")
    page = client.get("/patients/p1").get_data(as_text=True)
    cells = re.findall(r"<td>([^<]*kg)</td>", page)
    assert cells == ["62 kg", "61,5 kg", "1.061,25 kg"], cells
    english(client, "/patients/p1")
    cells = re.findall(r"<td>([^<]*kg)</td>", client.get("/patients/p1").get_data(as_text=True))
    assert cells == ["62 kg", "61.5 kg", "1,061.25 kg"], cells


def _figures(start: date, end: date, district: str | None, facility: str | None = None) -> dict:
    return {"range": {"start": "2026-09-07", "end": "2026-09-20", "district": None,
                      "weeks": ["2026-W37", "2026-W38"]},
            "facilities_using": {"count": 23, "new": 1, "baseline": 22, "goal": 165, "share": 0.14},
            "consults_per_facility_week": [{"facility": "Organization/tyt-my-hiep", "district": "Huyện Cao Lãnh",
                                            "week": "2026-W38", "count": 2}],
            "time_to_answer": {"routine": {"count": 0, "median_minutes": None, "p90_minutes": None},
                               "urgent": {"count": 2, "median_minutes": 5, "p90_minutes": 9}},
            "sla_breaches": [{"week": "2026-W37", "priority": "urgent", "count": 1}],
            "cashless_share": {"transfer_amount": 150000, "cash_amount": 0, "share": 1.0,
                               "transfer_count": 1, "cash_count": 0},
            "ehr_coverage": {"patients": 9, "population": 10, "share": 0.9, "as_of": "2026-09-20",
                             "population_outdated": False},
            "generated_at": "2026-09-20T10:00:00+07:00"}


def test_the_dashboard_names_weeks_by_their_first_day_not_their_iso_code(client, monkeypatch):
    """vi/en-1280-dept-dashboard: the weekly charts' axes and the table read '2026-W37' (the read model's
    ISO week); a health-department officer reads the week by its Monday (07/09, 14/09/2026). The CSV keeps
    the ISO week (it is data)."""
    import json

    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "figures", _figures)
    names(monkeypatch)
    sign_in(client, "health-dept")
    page = client.get("/dashboard").get_data(as_text=True)
    for chart in ("consults", "breaches"):
        config = re.search(rf'<script type="application/json" id="chart-{chart}">(.*?)</script>', page, re.S)
        assert config and json.loads(config.group(1))["data"]["labels"] == ["07/09", "14/09"]
    table = page.split('id="h-cons"', 1)[1].split("<summary>", 1)[1].split("</table>", 1)[0]  # the consults' table
    assert "Tuần bắt đầu" in table and "<td>14/09/2026</td><td>Trạm Y tế xã Mỹ Hiệp</td>" in table
    assert "W37" not in page and "W38" not in page
    english(client, "/dashboard")
    page = client.get("/dashboard").get_data(as_text=True)
    assert "Week starting" in page and "W38" not in page
    assert dashboard.week_label("not a week") == "not a week"


def test_the_time_to_answer_table_is_the_compact_one(client, monkeypatch):
    """en-1280-dept-dashboard: the time-to-answer table's last column ('90th percentile') was cut at the card's
    edge (the table scrolled inside a third of the page). The table is a compact one (smaller type, tighter
    cells); the browser test (tests/browser/test_page_wording.py) measures that it fits."""
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "figures", _figures)
    names(monkeypatch)
    sign_in(client, "health-dept")
    page = client.get("/dashboard").get_data(as_text=True)
    assert '<table class="compact" data-testid="time-to-answer">' in page
    css = client.get("/assets/app.css").get_data(as_text=True)
    assert re.search(r"table\.compact th, table\.compact td \{[^}]*padding: \.3rem \.25rem", css)


def test_accepting_a_consult_says_so(client, monkeypatch):
    """vi-1280-doctor-task-requested -> 'Nhận ca': the page came back without a word (starting says 'Đã bắt
    đầu khám.', booking 'Đã đặt lịch'); accepting now says 'Đã nhận ca hội chẩn.' after the redirect."""
    from sen_portal.web import doctor

    _consult(monkeypatch, "accepted")
    sent = []
    monkeypatch.setattr(doctor, "fhir_post", lambda service, path, body, **kw: sent.append(path) or {})
    sign_in(client, "doctor")
    page = client.get("/tasks/t1").get_data(as_text=True)
    assert "Đã nhận ca hội chẩn." not in page
    r = client.post("/tasks/t1/accept", data={"csrf_token": csrf(page)})
    assert r.status_code == 302 and sent == ["/fhir/Task/t1/$accept"]
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert '<div class="alert ok" role="status" data-testid="accepted">Đã nhận ca hội chẩn.</div>' in page
    assert "Đã nhận ca hội chẩn." not in client.get(r.headers["Location"]).get_data(as_text=True)  # said once


def test_an_unmatched_transfer_assigned_to_nothing_marks_its_row(client, monkeypatch):
    """vi-1280-cashier-unmatched-error: 'Vui lòng sửa các ô được đánh dấu.' above four rows, none marked (the
    row's select had aria-invalid, which no style drew). The row's select is drawn in red and says what to do
    under it; the other rows are left alone."""
    from sen_portal.web import cashier

    queue = {"payments": [{"id": f"standard:t{i}", "amount": 10_000 + i, "receivedAt": "2026-12-05T04:50:00+07:00",
                           "description": f"CK so {i}"} for i in (1, 2)]}
    invoice = {"resourceType": "Invoice", "id": "inv-a", "status": "issued", "date": "2026-12-05T04:50:00+07:00",
               "totalNet": {"value": 39000, "currency": "VND"}}
    monkeypatch.setattr(cashier, "shared_get", lambda *a, **kw: queue)
    monkeypatch.setattr(cashier, "fhir_get", lambda *a, **kw: bundle([invoice]))
    sign_in(client, "cashier")
    page = client.get("/unmatched").get_data(as_text=True)
    r = client.post("/unmatched", data={"csrf_token": csrf(page), "payment": "standard:t2", "invoice": ""})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and "Vui lòng sửa các ô được đánh dấu." in page
    assert re.findall(r'<select id="(invoice-\d)"[^>]*aria-invalid="true" aria-describedby="([^"]+)"', page) == [
        ("invoice-2", "invoice-2-error")]
    assert re.search(r'<p class="error" id="invoice-2-error"[^>]*>Chọn hóa đơn mà khoản chuyển khoản này thanh toán.'
                     r"</p>", page)
    assert page.count('data-testid="unmatched-row-error"') == 1
    css = client.get("/assets/app.css").get_data(as_text=True)
    assert re.search(r'select\[aria-invalid="true"\][^{]*\{[^}]*border: 2px solid var\(--bad\)', css)


def test_the_vietnamese_pages_call_the_patient_one_thing():
    """vi-1280-clinic-visit-cancelled: '... Hãy hỏi bệnh nhân khi nào có thể tham gia ...' on a page whose every
    other label says 'Người bệnh' (the portal's word, 21 messages); three messages said 'bệnh nhân'."""
    from babel.messages.pofile import read_po

    po = Path(__file__).resolve().parents[1] / "src/sen_portal/translations/vi/LC_MESSAGES/messages.po"
    with po.open("rb") as f:
        catalog = read_po(f)
    odd = [m.id for m in catalog if m.id and "bệnh nhân" in str(m.string).lower()]
    assert not odd


def test_the_invoice_reference_has_one_name_on_the_cashiers_pages(client):
    """vi-1280-cashier-invoices: the column and the invoice page say 'Mã tham chiếu' for the HD… code, the search
    above them 'mã thanh toán' (English says 'reference' everywhere): one name, 'mã tham chiếu'."""
    sign_in(client, "cashier")
    page = client.get("/invoices").get_data(as_text=True)  # billing does not answer: the search form stays
    assert "Tên, số điện thoại người bệnh hoặc mã tham chiếu" in page and "mã tham chiếu HD… viết hoa" in page
    assert "mã thanh toán" not in page.lower()
