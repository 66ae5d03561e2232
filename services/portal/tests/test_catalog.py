"""The portal's words (the handbook: Vietnamese pages, their English one click away): every sentence a page
shows is a message of the catalog, the English its id, with its Vietnamese translation.

- The catalog (``translations/vi/LC_MESSAGES/messages.po``) has every message ``pybabel extract`` finds in the
  code and the templates (:mod:`sen_portal.catalog`, the step ``make translations`` runs), each translated, none
  fuzzy, none left over that extract no longer finds (the step's update drops those), and the ``.mo`` the portal
  reads is that ``.po`` compiled by the same step.
- Every page of each role (clinic, doctor, cashier, the health department's officer, admin), in Vietnamese and
  English, with the back-ends scripted (a doctor's consult, the dashboard's figures) or not answering (the pages
  saying so): each message the page passed through gettext is one extract finds (an update keeps it) and the
  ``.po`` translates; the English page shows no Vietnamese text but the data (names, a facility), the language
  button "Tiếng Việt", the currency "đồng" and the examples a hint quotes (“nguyen van a” finds “Nguyễn Văn A”):
  a Vietnamese sentence written in a template or the code, never passed through gettext, would show there.
Found so: 'Nothing was sent.' (the doctor's page refusing a user who names no doctor) was in no catalog, the
page half English on a Vietnamese page; it and 'What you typed is kept below.' were called inside f-strings,
which extract does not read; 27 refusals (``refusals._say``) and WTForms' plural messages were no call extract
knew, so an update would have dropped their Vietnamese; 37 entries no page used any more."""

from __future__ import annotations

import html
import json
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import flask_babel
import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from sen_portal import catalog
from sen_shared import http

from services.portal.tests.test_dashboard_districts import _figures
from services.portal.tests.test_doctor_page_signer import MINUTES, Directory
from services.portal.tests.test_visit_changes import TID
from tests.support import csrf_token, portal_app, portal_signed_in

ROLES = ("clinic", "doctor", "cashier", "health-dept", "admin")
# every page of the portal: the doctor's consult (TID) is the scripted one, the other ids none the back-ends know
PAGES = ("/", "/login", "/patients", "/patients/new", "/patients/p-1", "/patients/p-1/consult",
         "/patients/p-1/consult-records/c-1", "/consults", f"/consults/{TID}", "/worklist", f"/tasks/{TID}",
         "/availability", "/prices", "/prices/c-1/history", "/invoices", "/invoices/new", "/invoices/i-1",
         "/invoices/i-1/receipt", "/refunds", "/shift", "/unmatched", "/dashboard", "/documents/d-1")
# what a GET answers that is no page: files, downloads, fragments htmx swaps into a page, redirects
NOT_PAGES = {"static", "web.static", "web.vendor", "web.favicon", "web.oidc_callback", "web.session_alive",
             "web.icd10_search", "web.diagnosis_search", "web.invoice_qr", "web.invoice_status", "web.receipt_pdf",
             "web.consult_minutes_pdf", "web.consult_record_pdf", "web.dashboard_csv", "web.dashboard_xlsx",
             "web.daily_report_csv", "web.task_slots"}
VIETNAMESE = re.compile(r"[ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ]", re.IGNORECASE)
BILLING = "http://127.0.0.1:10"  # scripted: teleconsult and the EHR (port 9); billing does not answer
# Vietnamese an English page shows on purpose: the button back to Vietnamese, the currency's name
SAID_IN_VIETNAMESE = ("Tiếng Việt", "đồng")


def _key(message: Any) -> str:
    return message.id if isinstance(message.id, str) else message.id[0]


@pytest.fixture(scope="module")
def po() -> Catalog:
    with catalog.po_file().open("rb") as f:
        return read_po(f)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    with catalog.extract(tmp_path_factory.mktemp("catalog") / "messages.pot").open("rb") as f:
        return {_key(m) for m in read_po(f) if m.id}


def _translated(message: Any) -> bool:
    return bool(message.string if isinstance(message.string, str) else all(message.string))


def test_the_catalog_has_every_message_extract_finds_translated_and_nothing_else(po, extracted):
    ids = {_key(m) for m in po if m.id}
    assert not sorted(extracted - ids), "not in the .po: run `make translations` and translate them"
    assert not [m.id for m in po if m.id and not _translated(m)], "untranslated"
    assert not [m.id for m in po if m.id and m.fuzzy], "fuzzy: check the translation, then drop the flag"
    assert not sorted(ids - extracted), "no longer in the code or the templates: `make translations` drops them"
    assert not list(po.obsolete)


def test_the_portal_reads_the_po_compiled(tmp_path: Path):
    """The committed ``.mo`` is the ``.po`` as the catalog's step compiles it: a translation edited in the
    ``.po`` and never compiled is not what the pages say."""
    for lang in catalog.LANGUAGES:
        po = catalog.po_file(lang, tmp_path)
        po.parent.mkdir(parents=True)
        po.write_bytes(catalog.po_file(lang).read_bytes())
    catalog.compile_mo(tmp_path)
    for lang in catalog.LANGUAGES:
        with catalog.po_file(lang, tmp_path).with_suffix(".mo").open("rb") as f:
            fresh = {_key(m): m.string for m in read_mo(f) if m.id}
        with catalog.po_file(lang).with_suffix(".mo").open("rb") as f:
            committed = {_key(m): m.string for m in read_mo(f) if m.id}
        assert committed == fresh, sorted(set(committed.items()) ^ set(fresh.items()))[:5]


def _a_fields_own_label() -> bool:
    """Whether WTForms asks for a field's label made of its name ("Next" of ``next``, "Key"): a field declared
    without a label, hidden or drawn by its own words, whose label no page shows."""
    frame = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return False
        if frame.f_code.co_name == "__init__" and frame.f_code.co_filename.endswith("wtforms/fields/core.py"):
            return True
        frame = frame.f_back
    return False


class _Said:
    """The messages passed through gettext (Flask-Babel's translations object, which the templates' ``_``, the
    code's gettext and lazy texts and WTForms' messages all read), counted."""

    def __init__(self, translations: Any, said: Counter[str]) -> None:
        self._t, self._said = translations, said

    def ugettext(self, string: str) -> str:
        if not _a_fields_own_label():
            self._said[string] += 1
        return self._t.ugettext(string)

    def ungettext(self, singular: str, plural: str, n: int) -> str:
        self._said[singular] += 1
        return self._t.ungettext(singular, plural, n)

    def upgettext(self, context: str, string: str) -> str:
        self._said[string] += 1
        return self._t.upgettext(context, string)

    def unpgettext(self, context: str, singular: str, plural: str, n: int) -> str:
        self._said[singular] += 1
        return self._t.unpgettext(context, singular, plural, n)

    gettext, ngettext = ugettext, ungettext

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class _Scripted(Directory):
    """The doctor's consult (teleconsult and the EHR scripted), every string it answered kept: the data a page
    may show in Vietnamese whatever its language."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.data: set[str] = set()

    def __call__(self, method: str, url: str, **kw: Any) -> http.Response:
        if url.startswith(BILLING):
            raise http.Unreachable("connection refused")  # billing: its pages say it does not answer
        answer = super().__call__(method, url, **kw)
        try:
            self._keep(json.loads(answer.content or b"null"))
        except ValueError:
            pass
        return answer

    def _keep(self, value: Any) -> None:
        if isinstance(value, str):
            self.data.add(value)
        elif isinstance(value, dict):
            for v in value.values():
                self._keep(v)
        elif isinstance(value, list):
            for v in value:
                self._keep(v)


@pytest.fixture()
def said(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    out: Counter[str] = Counter()
    kept = flask_babel.Domain.get_translations
    monkeypatch.setattr(flask_babel.Domain, "get_translations", lambda self: _Said(kept(self), out))
    return out


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> _Scripted:
    from sen_portal.web import dashboard

    monkeypatch.setattr(dashboard, "figures", _figures)
    fake = _Scripted.answering(monkeypatch)
    fake.status = "accepted"
    return fake


@pytest.fixture()
def pages_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: _Scripted):
    return portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_BILLING_URL=BILLING,
                      SEN_PORTAL_CACHE_SECONDS="0")


def _texts(page: str) -> list[str]:
    """What a reader sees or hears of a page: its text between tags, and the attributes read out or shown."""
    page = re.sub(r"<script\b.*?</script>|<style\b.*?</style>", " ", page, flags=re.S)
    out = [html.unescape(t) for t in re.split(r"<[^>]+>", page)]
    out += [html.unescape(v) for v in re.findall(r'\s(?:title|aria-label|placeholder|alt|data-(?:none|one|some|'
                                                r'label|[\w-]*refused|[\w-]*large[\w-]*|wrong-type))="([^"]*)"', page)]
    return [re.sub(r"\s+", " ", t).strip() for t in out if t.strip()]


def _not_data(text: str, data: list[str]) -> str:
    """``text`` without the data it holds (longest first), the examples a hint quotes, and what is said in
    Vietnamese on purpose."""
    text = re.sub(r"“[^”]*”", "", text)
    for value in data:
        text = text.replace(value, " ")
    return text


def test_every_page_a_role_can_open_is_listed(pages_app):
    adapter = pages_app.url_map.bind("portal.test")
    listed = {adapter.match(p.split("?")[0])[0] for p in PAGES}
    pages = {r.endpoint for r in pages_app.url_map.iter_rules() if "GET" in r.methods} - NOT_PAGES
    assert pages <= listed, sorted(pages - listed)


@pytest.mark.parametrize("role", ROLES)
def test_every_page_of_a_role_says_only_messages_the_catalog_translates(pages_app, scripted, said, po, extracted,
                                                                         role):
    from sen_portal.web.users import DEMO_USERS

    english: dict[str, list[str]] = {}
    for lang in ("vi", "en"):
        c = portal_signed_in(pages_app, role, lang)
        for path in PAGES:
            r = c.get(path)
            assert r.status_code != 500, (lang, path)  # a back-end down: 502 or 503, said on the page
            if lang == "en" and r.mimetype == "text/html":
                english[path] = _texts(r.get_data(as_text=True))
    assert len(said) > 50, len(said)  # the pages' words were heard
    by_id = {_key(m): m for m in po if m.id}
    unknown = sorted(m for m in said if m not in by_id or not _translated(by_id[m]) or by_id[m].fuzzy)
    assert not unknown, "said on a page, not translated in the .po"
    hidden = sorted(m for m in said if m not in extracted)
    assert not hidden, "said on a page but no call extract finds (an f-string? a helper of its own?)"
    figures = _figures(date(2026, 9, 7), date(2026, 9, 20), None)  # the dashboard's: a district's name
    scripted._keep(json.loads(json.dumps(figures, default=str)))
    data = sorted({DEMO_USERS[role][0].name, *scripted.data, *SAID_IN_VIETNAMESE}, key=len, reverse=True)
    untranslated = {(path, t) for path, texts in english.items() for t in texts
                    if VIETNAMESE.search(_not_data(t, data))}
    assert not untranslated, "Vietnamese on an English page that is no data: a sentence never passed to gettext"


def test_a_user_naming_no_doctor_is_told_nothing_was_sent_in_vietnamese(pages_app, scripted):
    """The doctor's page refusing the minutes of a user who names no doctor (an admin) said "… Nothing was sent."
    in English on the Vietnamese page: the message was in no catalog (called inside an f-string)."""
    c = portal_signed_in(pages_app, "admin")
    page = c.get(f"/tasks/{TID}").get_data(as_text=True)
    r = c.post(f"/tasks/{TID}/complete", data={"csrf_token": csrf_token(page), **MINUTES})
    alert = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.get_data(as_text=True).split('role="alert">')[1]
                                                          .split("</div>")[0])).strip()
    assert r.status_code == 403 and alert.endswith("Chưa có gì được gửi."), alert
    assert "Nothing was sent" not in r.get_data(as_text=True)
