"""A back-end that answers too slowly or fails, said on a page only shown (a GET: the consults list, a chart)
says to try again, not that "what you typed is kept": nothing was typed there (found walking the clinic's
consults list with teleconsult stopped). A form sent (a POST) still says its text is kept, as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import portal_app, portal_signed_in


@pytest.mark.parametrize("kind,shown,sent", [
    ("slow", "Dịch vụ hội chẩn từ xa trả lời quá chậm. Vui lòng thử lại sau giây lát.",
     "Dịch vụ hội chẩn từ xa trả lời quá chậm. Vui lòng thử lại sau giây lát; nội dung bạn đã nhập vẫn được giữ."),
    ("failed", "Dịch vụ hội chẩn từ xa trả lời lỗi. Vui lòng thử lại sau giây lát.",
     "Dịch vụ hội chẩn từ xa trả lời lỗi. Vui lòng thử lại sau giây lát; nội dung bạn đã nhập vẫn được giữ.")])
def test_a_page_only_shown_does_not_say_what_you_typed_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               kind: str, shown: str, sent: str) -> None:
    from sen_portal.web import backend_message
    from sen_portal.web.backend import BackendError

    app = portal_app(tmp_path, monkeypatch)
    with app.test_request_context("/consults", method="GET"):
        assert backend_message(BackendError(kind, "teleconsult")) == shown
    with app.test_request_context("/consults/t1/message", method="POST"):
        assert backend_message(BackendError(kind, "teleconsult")) == sent


def test_the_consults_list_with_teleconsult_slow_says_try_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sen_portal.web import clinic
    from sen_portal.web.backend import BackendError

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic", "en")

    def slow(*_a, **_k):
        raise BackendError("slow", "teleconsult")

    monkeypatch.setattr(clinic, "teleconsult_page", slow)
    r = client.get("/consults")
    page = r.get_data(as_text=True)
    assert "The teleconsult service is answering too slowly. Try again in a moment." in page  # said on the list
    assert "what you typed is kept" not in page


# A list page whose list could not be read says so on the page and answers with an outage's status, as the
# portal's error page does (web._backend_error): 503 when the service did not answer or answered too slowly,
# 502 when it answered with an error (backend.outage_status). The consults list, the worklist and the invoice
# queue answered 200 with the message (found with teleconsult stopped); an htmx refresh of the worklist names
# its target (HX-Retarget), which app.js swaps, so the message still shows.
OUTAGES = [("down", 503, "The teleconsult service cannot be reached right now."),
           ("slow", 503, "The teleconsult service is answering too slowly. Try again in a moment."),
           ("failed", 502, "The teleconsult service failed to answer. Try again in a moment.")]


def _outage(kind: str):
    from sen_portal.web.backend import BackendError

    def fail(*_a, **_k):
        raise BackendError(kind, "teleconsult")

    return fail


@pytest.mark.parametrize("kind,status,said", OUTAGES)
def test_the_consults_list_a_service_did_not_give_answers_with_an_outages_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: int, said: str) -> None:
    from sen_portal.web import clinic

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic", "en")
    monkeypatch.setattr(clinic, "teleconsult_page", _outage(kind))
    r = client.get("/consults")
    assert r.status_code == status
    assert said in r.get_data(as_text=True)


@pytest.mark.parametrize("kind,status,said", OUTAGES)
def test_the_worklist_a_service_did_not_give_answers_with_an_outages_status_its_refresh_swapped_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: int, said: str) -> None:
    from sen_portal.web import doctor

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "doctor", "en")
    monkeypatch.setattr(doctor, "specialty_choices", lambda *a, **k: [])
    monkeypatch.setattr(doctor, "facility_choices", lambda *a, **k: [])
    monkeypatch.setattr(doctor, "teleconsult_page", _outage(kind))
    r = client.get("/worklist")
    assert r.status_code == status and said in r.get_data(as_text=True)
    assert "HX-Retarget" not in r.headers
    r = client.get("/worklist", headers={"HX-Request": "true"})  # the page's refresh every 30 s
    assert r.status_code == status and said in r.get_data(as_text=True)
    assert r.headers["HX-Retarget"] == "#worklist"  # app.js swaps a 4xx/5xx that names its target


@pytest.mark.parametrize("kind,status", [("down", 503), ("slow", 503), ("failed", 502)])
def test_the_invoice_queue_billing_did_not_give_answers_with_an_outages_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: int) -> None:
    from sen_portal.web import cashier
    from sen_portal.web.backend import BackendError

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "cashier", "en")

    def fail(*_a, **_k):
        raise BackendError(kind, "billing")

    monkeypatch.setattr(cashier, "fhir_get", fail)
    r = client.get("/invoices")
    assert r.status_code == status
    assert "The billing service" in r.get_data(as_text=True)


# The searches a service did not answer (the invoice search, the patient search, htmx swapping their results in,
# and the pages a saved search shows again, /invoices?s=, /patients?s=) and the price list's filter answered 200
# with the message; they now answer with the outage's status too, an htmx answer naming its target (HX-Retarget,
# which app.js swaps) so the message still shows in place.
BILLING_OUTAGES = [("down", 503), ("slow", 503), ("failed", 502)]


def _failing(kind: str, service: str):
    from sen_portal.web.backend import BackendError

    def fail(*_a, **_k):
        raise BackendError(kind, service)

    return fail


@pytest.mark.parametrize("kind,status", BILLING_OUTAGES)
def test_an_invoice_search_a_service_did_not_answer_has_an_outages_status_swapped_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: int) -> None:
    from sen_portal.web import cashier

    from tests.support import csrf_token

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "cashier", "en")
    token = csrf_token(client.get("/invoices").get_data(as_text=True))  # the queue read before billing fails
    monkeypatch.setattr(cashier, "fhir_get", _failing(kind, "billing"))
    r = client.post("/invoices/search", data={"q": "hd0p2b6znpm", "csrf_token": token}, headers={"HX-Request": "true"})
    assert r.status_code == status and "The billing service" in r.get_data(as_text=True)
    assert r.headers["HX-Retarget"] == "#invoice-results"  # app.js swaps a 4xx/5xx that names its target
    saved = client.get(r.headers["HX-Push-Url"])  # the queue's saved-search view (Back, refresh)
    assert saved.status_code == status and "The billing service" in saved.get_data(as_text=True)
    assert 'value="hd0p2b6znpm"' in saved.get_data(as_text=True)
    plain = client.post("/invoices/search", data={"q": "hd0p2b6znpm", "csrf_token": token})  # without JavaScript
    assert plain.status_code == status and "HX-Retarget" not in plain.headers


@pytest.mark.parametrize("kind,status", BILLING_OUTAGES)
def test_a_patient_search_the_ehr_did_not_answer_has_an_outages_status_swapped_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: int) -> None:
    from sen_portal.web import clinic

    from tests.support import csrf_token

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "clinic", "en")
    token = csrf_token(client.get("/patients").get_data(as_text=True))
    monkeypatch.setattr(clinic, "fhir_get", _failing(kind, "ehr"))
    r = client.post("/patients/search", data={"q": "dang hung", "csrf_token": token}, headers={"HX-Request": "true"})
    assert r.status_code == status and "The health record service" in r.get_data(as_text=True)
    assert r.headers["HX-Retarget"] == "#results"
    saved = client.get(r.headers["HX-Push-Url"])
    assert saved.status_code == status and "The health record service" in saved.get_data(as_text=True)
    plain = client.post("/patients/search", data={"q": "dang hung", "csrf_token": token})
    assert plain.status_code == status and "HX-Retarget" not in plain.headers


@pytest.mark.parametrize("kind,status", BILLING_OUTAGES)
def test_the_price_list_billing_did_not_give_has_an_outages_status_its_filter_swapped_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: int) -> None:
    from sen_portal.web import prices

    client = portal_signed_in(portal_app(tmp_path, monkeypatch), "cashier", "en")
    monkeypatch.setattr(prices, "fetch_list", _failing(kind, "billing"))
    r = client.get("/prices")
    assert r.status_code == status and "The billing service" in r.get_data(as_text=True)
    r = client.get("/prices?q=kham", headers={"HX-Request": "true"})  # the filter typed
    assert r.status_code == status and "The billing service" in r.get_data(as_text=True)
    assert r.headers["HX-Retarget"] == "#price-results"
