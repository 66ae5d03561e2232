"""Every form of the portal, sent empty or with garbage in each field, says what is wrong in Vietnamese on a
Vietnamese page: no WTForms default (English: "Not a valid integer value.", "Not a valid choice.", "Field
cannot be longer than 100 characters.") reaches a page. And the boxes the reviewers found refusing what is
right or saying the wrong thing: phone numbers written with spaces or +84, negative amounts."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import wtforms
from flask_babel import get_locale
from werkzeug.datastructures import MultiDict

from tests.support import portal_app


@pytest.fixture
def app(tmp_path, monkeypatch):
    return portal_app(tmp_path, monkeypatch)


def _wtforms_defaults() -> list[re.Pattern[str]]:
    """WTForms' own messages (its catalog template), as patterns with their ``%(max)d`` filled by anything."""
    pot = (Path(wtforms.__file__).parent / "locale" / "wtforms.pot").read_text(encoding="utf-8")
    texts = re.findall(r'^msgid(?:_plural)? "(.+)"$', pot, re.MULTILINE)
    return [re.compile(re.sub(r"%\\\(\w+\\\)[sd]", ".+", re.escape(t))) for t in texts]


def _form_classes() -> list[type]:
    import sen_portal.web as web

    found: dict[str, type] = {}
    for mod in pkgutil.iter_modules(web.__path__):
        module = importlib.import_module(f"sen_portal.web.{mod.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, wtforms.Form) and cls.__module__.startswith("sen_portal"):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


FORMS = _form_classes()
GARBAGE = ["", "  ", "zz<garbage>", "-5", "7.5", "9" * 30, "x" * 5000, "2026-13-45"]


def _fields(form: Any) -> list[Any]:
    out = []
    for field in form:
        if isinstance(field, wtforms.FieldList):
            for entry in field:
                out += _fields(entry.form) if isinstance(entry, wtforms.FormField) else [entry]
        elif isinstance(field, wtforms.FormField):
            out += _fields(field.form)
        else:
            out.append(field)
    return out


def _messages(errors: Any) -> list[str]:
    if isinstance(errors, dict):
        return [m for v in errors.values() for m in _messages(v)]
    if isinstance(errors, (list, tuple)):
        return [m for v in errors for m in _messages(v)]
    return [str(errors)]


def test_every_form_of_the_portal_is_found_and_translates_wtforms_own_messages():
    from sen_portal.web import forms

    names = {c.__name__ for c in FORMS}
    assert {"FindSlotForm", "AvailabilityForm", "ConsultForm", "PatientForm", "PriceForm", "CardForm",
            "DailyReportForm", "WindowForm", "RefundForm"} <= names, names
    for cls in FORMS:  # each on the portal's base: a form on flask_wtf's own would speak WTForms' English
        assert issubclass(cls, (forms.FlaskForm, forms.Form)), cls


@pytest.mark.parametrize("cls", FORMS, ids=lambda c: c.__name__)
def test_no_form_says_wtforms_english_on_a_vietnamese_page(app, cls):
    defaults = _wtforms_defaults()
    with app.test_request_context("/", method="POST"):
        assert str(get_locale()) == "vi"
        names = [f.name for f in _fields(cls(formdata=None, meta={"csrf": False}))]
        seen: set[str] = set()
        for value in GARBAGE:
            form = cls(formdata=MultiDict([(n, value) for n in names]), meta={"csrf": False})
            for field in _fields(form):
                if getattr(field, "choices", ()) is None:  # filled by the page (the doctors to give a task to)
                    field.choices = [("known", "Known")]
            form.validate()
            seen.update(_messages(form.errors))
        english = [m for m in seen if any(p.fullmatch(m) for p in defaults)]
        assert not english, english
        unaccented = [m for m in seen if m.isascii()]  # a Vietnamese sentence has its accents
        assert not unaccented, unaccented


@pytest.mark.parametrize("typed", ["0912 345 678", "0912.345.678", "0912-345-678", "+84 912 345 678",
                                   "84912345678", "(+84) 912 345 678", "+84 0912 345 678", "0912345678"])
def test_a_phone_number_written_as_people_write_it_is_kept_as_0xxxxxxxxx(app, typed):
    from sen_portal.web.forms import PatientForm

    with app.test_request_context("/", method="POST"):
        form = PatientForm(formdata=MultiDict({"phone": typed}), meta={"csrf": False})
        form.validate()
        assert not form.phone.errors, form.phone.errors
        assert form.phone.data == "0912345678"


def test_an_eleven_digit_number_and_a_landline_are_kept_too(app):
    from sen_portal.web.forms import phone_number

    assert phone_number("+84 24 3825 1234") == "02438251234"
    assert phone_number("024 3825 1234") == "02438251234"


@pytest.mark.parametrize("typed", ["abc", "0912 345", "+1 555 123 4567", "0912345678901", "09a2345678"])
def test_what_is_no_phone_number_is_refused_with_the_same_clear_message(app, typed):
    from sen_portal.web.forms import PatientForm

    with app.test_request_context("/", method="POST"):
        form = PatientForm(formdata=MultiDict({"phone": typed}), meta={"csrf": False})
        form.validate()
        said = "Số điện thoại có 10 hoặc 11 chữ số, bắt đầu bằng 0 (hoặc +84 thay cho số 0)."
        assert form.phone.errors == [said], form.phone.errors


@pytest.mark.parametrize("typed", ["-50.000", "- 50 000 ₫", "−50000", "-1"])
def test_a_negative_amount_is_said_to_be_negative(app, typed):
    from sen_portal.web.forms import CashForm, ShiftCloseForm

    with app.test_request_context("/", method="POST"):
        for form in (CashForm(formdata=MultiDict({"amount": typed}), meta={"csrf": False}),
                     ShiftCloseForm(formdata=MultiDict({"counted_cash": typed, "counted_transfers": "0"}),
                                    meta={"csrf": False})):
            form.validate()
            said = _messages(form.errors)
            assert said == ["Số tiền không thể âm: ghi không có dấu trừ, ví dụ 50.000."], said


def test_a_number_box_left_empty_says_its_range_once(app):
    from sen_portal.web.forms import AvailabilityForm, FindSlotForm

    with app.test_request_context("/", method="POST"):
        form = FindSlotForm(formdata=MultiDict({"start": "05/12/2026", "days": ""}))
        assert not form.validate()
        assert form.days.errors == ["Từ 1 đến 31 ngày."]
        form = AvailabilityForm(formdata=MultiDict({"slot_minutes": "abc"}), meta={"csrf": False})
        form.validate()
        assert form.slot_minutes.errors == ["Từ 10 đến 120 phút."]


def test_the_weekly_hours_page_says_an_empty_slot_length_in_vietnamese_only(tmp_path, monkeypatch):
    """The reviewer's page: /availability, "Độ dài mỗi lượt" emptied, showed "Not a valid integer value. Từ 10
    đến 120 phút."."""
    from sen_shared import http

    from services.portal.tests.test_doctor_consult_page import Schedules
    from tests.support import csrf_token, portal_signed_in

    monkeypatch.setattr(http, "request", Schedules())
    app = portal_app(tmp_path, monkeypatch, backend="http://127.0.0.1:9", SEN_PORTAL_CACHE_SECONDS="0")
    c = portal_signed_in(app, "doctor")
    token = csrf_token(c.get("/availability").get_data(as_text=True))
    r = c.post("/availability", data={"csrf_token": token, "which": "week", "week-windows-0-days": "mon",
                                      "week-windows-0-start_time": "08:00", "week-windows-0-end_time": "11:00",
                                      "week-slot_minutes": ""})
    page = r.get_data(as_text=True)
    assert "Từ 10 đến 120 phút." in page and "Not a valid" not in page, page[-3000:]


# a value each box takes, per form and field: written with another script's digits (Arabic-Indic, full width)
# or with a new line after it, it is refused, not taken on to the back-ends (a price's version goes in If-Match:
# '١' or '1\n' there was a 500, the header unencodable; a CCCD of '٠٠١...' was kept as typed)
_PATTERNED = [("prices", "PriceForm", "version", "12"), ("forms", "PatientForm", "cccd", "001203004567"),
              ("forms", "PatientForm", "bhyt", "DN4797912345678"), ("forms", "PatientForm", "phone", "0912345678"),
              ("forms", "TakeOnForm", "number", "001203004567"), ("forms", "TakeOnForm", "birth_date", "1980-02-03"),
              ("forms", "TakeOnForm", "gender", "male"), ("forms", "TakeOnForm", "system", "cccd"),
              ("forms", "WindowForm", "start_time", "08:30"), ("charges", "CardForm", "card_number",
                                                                          "DN4797912345678")]
_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
_WIDE = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize(("module", "name", "field", "good"), _PATTERNED, ids=lambda v: str(v))
def test_a_patterned_box_takes_ascii_digits_only_and_no_new_line(app, module, name, field, good):
    cls = getattr(importlib.import_module(f"sen_portal.web.{module}"), name)
    with app.test_request_context("/", method="POST"):
        def taken(value: str) -> Any:
            """What the box keeps of ``value``; None when it is refused."""
            form = cls(formdata=MultiDict({field: value}), meta={"csrf": False})
            form.validate()
            return None if getattr(form, field).errors else getattr(form, field).data

        assert taken(good) == good
        for bad in {good.translate(_DIGITS), good.translate(_WIDE), good + "\n", "\n" + good} - {good}:
            assert taken(bad) in (None, good), repr(bad)  # refused, or read as the number (a phone's blanks)


@pytest.mark.parametrize(("payment", "taken"), [("sepay:t2", True), ("casso:FT 24.1", True), ("cash:6a99", True),
                                                ("../fhir/Invoice/inv-1/$cancel?", False), ("pay-1?x=1", False),
                                                ("pay#1", False), ("..", False), ("a\x00b", False), ("x" * 301, False)])
def test_a_refunds_payment_is_one_id_never_a_path(app, payment, taken):
    """The refund form's hidden payment goes into billing's path (``/payments/<payment>/refund``): one that
    would leave its segment was sent as it was (backend.call now refuses such a path too)."""
    from sen_portal.web.forms import RefundForm

    with app.test_request_context("/", method="POST"):
        form = RefundForm(formdata=MultiDict({"payment": payment, "reason": "Thu nhầm"}), meta={"csrf": False})
        form.validate()
        assert (not form.payment.errors) == taken, form.payment.errors
        assert taken or form.payment.errors == ["Chọn khoản thanh toán cần hoàn."], form.payment.errors


def _date_fields() -> list[tuple[type, str]]:
    from sen_portal.web.forms import LocalDateField

    return [(cls, name) for cls in FORMS for name, f in vars(cls).items()
            if getattr(f, "field_class", None) is LocalDateField]


@pytest.mark.parametrize(("cls", "name"), _date_fields(), ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("typed", ["31/12/9999", "9999-12-31", "01/01/0001", "1799-12-31", "01/01/3000"])
def test_a_date_at_the_calendars_edge_is_refused_in_every_date_box(app, cls, name, typed):
    """/tasks/<id>/slots?start=9999-12-31 was a 500 (the days searched after it overflow the calendar): a date
    box takes the years 1800 to 2999, and says so; 01/01/1800 and 31/12/2999 are dates."""
    with app.test_request_context("/", method="POST"):
        form = cls(formdata=MultiDict({name: typed}), meta={"csrf": False})
        form.validate()
        assert getattr(form, name).errors == ["Nhập ngày trong khoảng từ 01/01/1800 đến 31/12/2999."], typed
        for fine in ("01/01/1800", "31/12/2999"):
            form = cls(formdata=MultiDict({name: fine}), meta={"csrf": False})
            form.validate()
            assert getattr(form, name).data is not None, fine


def _text_fields() -> list[tuple[type, str]]:
    """Every form's text boxes a person types in (StringField, TextAreaField; not the hidden fields the page fills,
    nor the money boxes, whose text that is no amount has its own message)."""
    from sen_portal.web.forms import VndField

    return [(cls, f.name) for cls in FORMS for f in _fields(cls(formdata=None, meta={"csrf": False}))
            if isinstance(f, wtforms.StringField) and not isinstance(f, (wtforms.HiddenField, VndField))]


@pytest.mark.parametrize(("cls", "name"), _text_fields(), ids=lambda v: getattr(v, "__name__", v))
def test_a_control_character_in_any_text_box_is_said_on_it(app, cls, name):
    """A NUL in the minutes' participants (or a shift's note, a refund's reason) went on to the back-end, which
    refuses it: the page said only "Dịch vụ hội chẩn từ xa từ chối yêu cầu" (a 409), naming no box. Every text
    box refuses a control character in words, in Vietnamese; a tab and new lines are text (session 21 fuzz)."""
    with app.test_request_context("/", method="POST"):
        for typed in ("Nguyễn\x00Văn", "a\x1bb", "x\x7f"):
            form = cls(formdata=MultiDict({name: typed}), meta={"csrf": False})
            for field in _fields(form):
                if getattr(field, "choices", ()) is None:
                    field.choices = [("known", "Known")]
            form.validate()
            field = next(f for f in _fields(form) if f.name == name)
            assert "Hãy xóa các ký tự điều khiển (như NUL) khỏi nội dung này." in field.errors, (typed, field.errors)
        form = cls(formdata=MultiDict({name: "Dòng một\r\n\tdòng hai"}), meta={"csrf": False})
        form.validate()
        field = next(f for f in _fields(form) if f.name == name)
        assert not [e for e in field.errors if "điều khiển" in e], field.errors
