"""The portal's price list and the cashier's daily report against the real billing service (a
gunicorn process on loopback, the real FerretDB; the price list loaded from billing's own file as
its worker loads it at start).

The portal runs in this process (Flask's test client) with its demo users; every call to billing
carries the signed-in user's own token, so billing decides. Covered: an admin's price change is
billing's next version and shows in the entry's history (who, old → new); two admins who opened
the page at the same version: the second save is refused by billing (412 on ``If-Match``) and the
page says so with the price in force, which stays the first admin's; a cashier cannot change a
price (the portal refuses, and billing refuses the cashier's token too); the daily CSV downloaded
through the portal is billing's CSV of that day, byte for byte, with its file name, and the shift
page's totals are that CSV's.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sen_shared.auth import issue_dev_token

from tests.support import (
    app_client,
    billing_service,  # noqa: F401 - the billing fixture, used by name
    csrf_token,
    free_port,
    portal_signed_in,
    vn_day_with_room,
)

pytestmark = pytest.mark.integration

FJ = "application/fhir+json"
FACILITY = "tyt-my-hiep"  # the portal's demo cashier's facility
ENTRY = "dien-tim"  # Điện tâm đồ, in billing's price list file


def _auth(dev_key: Path, role: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_dev_token(dev_key, role, **claims)}", "Accept": FJ}


@pytest.fixture(scope="module")
def portal(base_env, run_id, billing, mongo_client):
    dead = f"http://127.0.0.1:{free_port()}"  # the pages here need billing only
    env = {**base_env, "SEN_EHR_URL": dead, "SEN_TELECONSULT_URL": dead, "SEN_BILLING_URL": billing[0],
           "SEN_HTTP_TIMEOUT": "10"}
    with app_client("portal", env, f"sen_t{run_id}_pp_portal", mongo_client) as (_client, app):
        app.app.config["TESTING"] = True
        yield app.app


def _form(page: str, cid: str) -> dict[str, str]:
    row = page[page.index(f'id="price-{cid}"'):]
    row = row[:row.index("</tr>")]
    fields = dict(re.findall(r'name="([^"]+)"[^>]*value="([^"]*)"', row))
    fields.update({k: v for v, k in re.findall(r'value="([^"]*)"[^>]*name="([^"]+)"', row)})
    assert f"p-{cid}-version" in fields, "no price form on the row"
    return fields


def _in_billing(url: str, dev_key: Path, cid: str = ENTRY) -> dict[str, Any]:
    r = httpx.get(f"{url}/fhir/ChargeItemDefinition/{cid}", headers=_auth(dev_key, "cashier", facility=FACILITY))
    assert r.status_code == 200, r.text
    return r.json()


def _price(res: dict[str, Any]) -> int:
    return int(res["propertyGroup"][0]["priceComponent"][0]["amount"]["value"])


def _dong(n: int) -> str:
    return f"{n:,}".replace(",", ".") + "\u00a0₫"


def _save(admin: Any, price: int) -> None:
    """The admin types ``price`` in the entry's form on /prices and saves it: the redirect back."""
    page = admin.get("/prices").get_data(as_text=True)
    r = admin.post(f"/prices/{ENTRY}", data={**_form(page, ENTRY), f"p-{ENTRY}-price": _dong(price).replace(
        "\u00a0₫", "")})
    assert r.status_code == 302, r.get_data(as_text=True)[-2000:]


def test_an_admins_change_is_billings_next_version_and_in_the_history(portal, billing, dev_key):
    url, _db = billing
    before = _in_billing(url, dev_key)
    version, old = int(before["meta"]["versionId"]), _price(before)
    admin = portal_signed_in(portal, "admin")
    assert _dong(old) in (page := admin.get("/prices").get_data(as_text=True)) and "Điện tâm đồ" in page
    new = old + 5000
    _save(admin, new)
    after = _in_billing(url, dev_key)
    assert int(after["meta"]["versionId"]) == version + 1 and _price(after) == new
    page = admin.get("/prices").get_data(as_text=True)
    assert f"giá mới là {_dong(new)} (phiên bản {version + 1})" in page
    history = admin.get(f"/prices/{ENTRY}/history").get_data(as_text=True)
    rows = re.findall(r"<tr role=\"row\">(.*?)</tr>", history[history.index("<tbody"):], re.S)
    assert len(rows) == version + 1
    newest = rows[0]
    assert f">{version + 1}<" in newest and "Quản trị viên" in newest
    assert newest.index(_dong(old)) < newest.index(_dong(new))  # old → new
    assert "Thêm vào bảng giá" in rows[-1]  # version 1: the file's entry
    # a clinic reads the history too, without any edit control on the list
    clinic = portal_signed_in(portal, "clinic")
    assert clinic.get(f"/prices/{ENTRY}/history").status_code == 200
    assert 'name="csrf_token"' not in clinic.get("/prices").get_data(as_text=True).split('id="price-results"')[1]


def test_saving_the_price_in_force_makes_no_version_and_the_page_says_no_change(portal, billing, dev_key):
    """The reviewer's 35.000 → 35.000: billing keeps the version (no history row), the page says so."""
    url, _db = billing
    before = _in_billing(url, dev_key)
    version, price = int(before["meta"]["versionId"]), _price(before)
    admin = portal_signed_in(portal, "admin")
    _save(admin, price)
    after = _in_billing(url, dev_key)
    assert after == before  # the same version, its date and author
    page = admin.get("/prices").get_data(as_text=True)
    assert f"Không có thay đổi: giá Điện tâm đồ vẫn là {_dong(price)} (phiên bản {version})" in page
    history = admin.get(f"/prices/{ENTRY}/history").get_data(as_text=True)
    assert len(re.findall(r"<tr role=\"row\">", history[history.index("<tbody"):])) == version


def test_a_stale_edit_gets_the_changed_meanwhile_message_and_overwrites_nothing(portal, billing, dev_key):
    url, _db = billing
    first, second = portal_signed_in(portal, "admin"), portal_signed_in(portal, "admin")
    seen_first = _form(first.get("/prices").get_data(as_text=True), ENTRY)
    seen_second = _form(second.get("/prices").get_data(as_text=True), ENTRY)
    assert seen_first[f"p-{ENTRY}-version"] == seen_second[f"p-{ENTRY}-version"]
    r = first.post(f"/prices/{ENTRY}", data={**seen_first, f"p-{ENTRY}-price": "61.000"})
    assert r.status_code == 302
    r = second.post(f"/prices/{ENTRY}", data={**seen_second, f"p-{ENTRY}-price": "72.000"})
    page = r.get_data(as_text=True)
    assert r.status_code == 409
    assert f"người khác đã đổi giá này: giá hiện hành là {_dong(61000)}" in page
    assert "Giá bạn nhập chưa được lưu" in page and "Quản trị viên" in page
    kept = _form(page, ENTRY)
    assert kept[f"p-{ENTRY}-price"] == "72.000"
    assert int(kept[f"p-{ENTRY}-version"]) == int(seen_second[f"p-{ENTRY}-version"]) + 1
    assert _price(_in_billing(url, dev_key)) == 61000  # the first admin's price stands


def test_a_cashier_cannot_change_a_price_neither_through_the_portal_nor_at_billing(portal, billing, dev_key):
    url, _db = billing
    before = _in_billing(url, dev_key)
    cashier = portal_signed_in(portal, "cashier")
    page = cashier.get("/prices").get_data(as_text=True)
    assert "Điện tâm đồ" in page and f'name="p-{ENTRY}-price"' not in page
    r = cashier.post(f"/prices/{ENTRY}", data={"csrf_token": csrf_token(page), f"p-{ENTRY}-price": "1000",
                                               f"p-{ENTRY}-version": before["meta"]["versionId"]})
    assert r.status_code == 403 and "Chỉ quản trị viên được sửa bảng giá." in r.get_data(as_text=True)
    body = {k: v for k, v in before.items() if k != "meta"}
    body["propertyGroup"][0]["priceComponent"][0]["amount"]["value"] = 1000
    r = httpx.put(f"{url}/fhir/ChargeItemDefinition/{ENTRY}", content=json.dumps(body),
                  headers={**_auth(dev_key, "cashier", facility=FACILITY), "Content-Type": FJ,
                           "If-Match": f'W/"{before["meta"]["versionId"]}"'})
    assert r.status_code == 403, r.text
    assert _in_billing(url, dev_key)["meta"]["versionId"] == before["meta"]["versionId"]


def test_the_daily_csv_through_the_portal_is_billings_for_that_day(portal, billing, dev_key):
    from tests.billing_support import make_invoice

    url, db = billing
    today = vn_day_with_room()  # the cash's day in Vietnam, and the report's
    iid, code = make_invoice(db, 120000, facility=FACILITY)
    cashier = portal_signed_in(portal, "cashier")
    page = cashier.get("/shift").get_data(as_text=True)
    if 'name="which" value="open"' in page:
        r = cashier.post("/shift", data={"csrf_token": csrf_token(page), "which": "open", "open-opening_cash": "0"})
        assert r.status_code == 302, r.get_data(as_text=True)[-1500:]
    r = cashier.post(f"/invoices/{iid}/cash", data={"csrf_token": csrf_token(page), "cash-amount": "120000"})
    assert r.status_code == 302, r.get_data(as_text=True)[-1500:]
    r = cashier.get(f"/shift/daily-report.csv?day={today:%d/%m/%Y}")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == f'attachment; filename="doi-soat-{today.isoformat()}.csv"'
    direct = httpx.get(f"{url}/payments/reports/daily.csv", params={"day": today.isoformat()},
                       headers=_auth(dev_key, "cashier", facility=FACILITY))
    assert direct.status_code == 200 and ",cash," in direct.text  # billing's own: the machine format
    # the portal's: billing's rows in the page's language, with the BOM Excel needs
    assert r.data.startswith("\ufeff".encode()) and r.data.count(b"\r\n") == direct.content.count(b"\r\n")
    # the invoice named by its payment reference (HD…), as the desk and the patient know it, not its id
    mine = [row for row in csv.reader(io.StringIO(r.data.decode("utf-8-sig"))) if code in row]
    assert mine and mine[0][0] == "Khoản thanh toán" and mine[0][4] == "Tiền mặt" and mine[0][7] == "120000"
    assert mine[0][5] == code and not any(iid in row for row in mine)
    page = cashier.get(f"/shift?day={today:%d/%m/%Y}").get_data(as_text=True)
    summary = page[page.index('data-testid="daily-summary"'):]
    assert f'data-total="cash">{_dong(120000)}' in summary and 'data-total="payments">1<' in summary
    # the health department: billing refuses its token, so the portal does not offer the report
    assert httpx.get(f"{url}/payments/reports/daily.csv", headers=_auth(dev_key, "health-dept")).status_code == 403
    dept = portal_signed_in(portal, "health-dept")
    assert dept.get(f"/shift/daily-report.csv?day={today:%d/%m/%Y}").status_code == 403


def test_admins_saving_the_same_version_at_once_one_wins_the_others_are_told(portal, billing, dev_key):
    """Four admins who opened the list at the same version save at the same moment: billing claims the
    next version by one insert, so exactly one save lands; the other three get the 'changed meanwhile'
    page naming the winner's price, and billing holds the winner's price at exactly one version more."""
    from concurrent.futures import ThreadPoolExecutor

    url, _db = billing
    start = _in_billing(url, dev_key)
    admins = [portal_signed_in(portal, "admin") for _ in range(4)]
    seen = [_form(a.get("/prices").get_data(as_text=True), ENTRY) for a in admins]
    prices_typed = [81000 + 1000 * i for i in range(4)]

    def save(i: int) -> tuple[int, str]:
        r = admins[i].post(f"/prices/{ENTRY}", data={**seen[i], f"p-{ENTRY}-price": str(prices_typed[i])})
        return r.status_code, r.get_data(as_text=True)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(save, range(4)))
    won = [i for i, (status, _page) in enumerate(answers) if status == 302]
    assert len(won) == 1, [a[0] for a in answers]
    after = _in_billing(url, dev_key)
    assert int(after["meta"]["versionId"]) == int(start["meta"]["versionId"]) + 1
    assert _price(after) == prices_typed[won[0]]
    for i, (status, page) in enumerate(answers):
        if i != won[0]:
            assert status == 409 and f"giá hiện hành là {_dong(prices_typed[won[0]])}" in page


def test_a_price_sent_twice_after_its_answer_was_lost_is_saved_once(portal, billing, dev_key):
    """The entry's form is sent in place with its key (made when the list is shown): sent again after its first
    answer was lost on the way back, billing replays the save it made (Idempotency-Key), one new version, and
    the page says the price is saved, not that someone changed it meanwhile (the version alone said so)."""
    url, _db = billing
    before = _in_billing(url, dev_key)
    version, new = int(before["meta"]["versionId"]), _price(before) + 7000
    admin = portal_signed_in(portal, "admin")
    fields = {**_form(admin.get("/prices").get_data(as_text=True), ENTRY), f"p-{ENTRY}-price": str(new)}
    assert re.fullmatch(r"[0-9a-f]{32}", fields[f"p-{ENTRY}-key"])
    hx = {"HX-Request": "true", "HX-Current-URL": "http://localhost/prices"}
    for n in range(2):
        if n:  # the second send in another second than the first: its request must carry the first's time
            time.sleep(1.05)
        r = admin.post(f"/prices/{ENTRY}", data=fields, headers=hx)
        assert r.status_code == 204 and r.headers["HX-Redirect"] == f"/prices#price-{ENTRY}", r.get_data(as_text=True)
        page = admin.get("/prices").get_data(as_text=True)
        assert f"giá mới là {_dong(new)} (phiên bản {version + 1})" in page and "đổi giá này" not in page
    after = _in_billing(url, dev_key)
    assert int(after["meta"]["versionId"]) == version + 1 and _price(after) == new
