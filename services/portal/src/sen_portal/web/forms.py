"""The pages' forms (Flask-WTF: CSRF token, validation, messages in the user's language)."""

from __future__ import annotations

import copy
import re
import unicodedata
from datetime import date
from typing import Any

from flask_babel import get_translations
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm as _FlaskForm
from markupsafe import Markup, escape
from sen_shared.fhir.names import name_and_role, name_key, same_person
from wtforms import (
    BooleanField,
    DateField,
    FieldList,
    FormField,
    HiddenField,
    IntegerField,
    MultipleFileField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms import Form as _Form
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    StopValidation,
    ValidationError,
)
from wtforms.widgets import Input, TextInput
from wtforms.widgets.core import clean_key
from wtforms.widgets.core import html_params as wtforms_html_params

from .formatting import MAX_VND, AmountTooLarge, parse_vnd, thousands, vnd

# WTForms' own messages, said where a form gives none of its own (a Length(max=...) without a message, a
# hidden field's DataRequired(), a choice that is not on the list, a number box's text): WTForms ships no
# Vietnamese, so the portal's catalog has them (listed here for pybabel extract; test_forms_i18n checks that
# no form of the portal shows English on a Vietnamese page)
WTFORMS_MESSAGES = (
    _l("This field is required."),
    _l("Invalid input."),
    _l("Not a valid choice."),
    _l("Invalid Choice: could not coerce."),
    _l("Invalid choice(s): one or more data inputs could not be coerced."),
    _l("Not a valid integer value."),
    _l("Not a valid decimal value."),
    _l("Not a valid float value."),
    _l("Not a valid date value."),
    _l("Not a valid datetime value."),
    _l("Not a valid time value."),
    _l("Field must be between %(min)d and %(max)d characters long."),
    _l("Number must be at least %(min)s."),
    _l("Number must be at most %(max)s."),
    _l("Number must be between %(min)s and %(max)s."),
)


def _plural(singular: str, plural: str) -> tuple[str, str]:
    """A plural message WTForms translates itself (its ngettext), marked for pybabel extract
    (:data:`sen_portal.catalog.KEYWORDS`): a message extract does not find is dropped by the catalog's update."""
    return singular, plural


WTFORMS_PLURALS = (  # (singular, plural): WTForms' ngettext messages
    _plural("Field must be at least %(min)d character long.", "Field must be at least %(min)d characters long."),
    _plural("Field cannot be longer than %(max)d character.", "Field cannot be longer than %(max)d characters."),
    _plural("Field must be exactly %(max)d character long.", "Field must be exactly %(max)d characters long."),
    _plural("'%(value)s' is not a valid choice for this field.", "'%(value)s' are not valid choices for this field."),
)


class PortalTranslations:
    """WTForms' translations object (``Meta.get_translations``): its messages from the portal's catalog in the
    request's language (Flask-Babel), as every other word of the pages; the unformatted text (WTForms fills
    in ``%(max)d`` itself)."""

    def gettext(self, string: str) -> str:
        return get_translations().ugettext(string)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return get_translations().ungettext(singular, plural, n)


TRANSLATIONS = PortalTranslations()


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # no one types them; tab and new lines are text


def no_control_characters(form: Any) -> bool:
    """Each text box of ``form`` (not the hidden fields) holding a control character (a NUL, an escape) says so
    on it; whether none did. Sent on, the back-ends refuse it (teleconsult and billing store no NUL): the page
    said only that the service refused the request (a 409), naming no box."""
    ok = True
    for field in form:
        if isinstance(field, StringField) and not isinstance(field, HiddenField) and isinstance(field.data, str) \
                and CONTROL.search(field.data):  # a hidden field is the page's own: its validators judge it
            field.errors = [*field.errors, str(_l("Remove the control characters (such as NUL) from this text."))]
            ok = False
    return ok


def html_params(**kwargs: Any) -> Markup:
    """WTForms' ``widgets.html_params``, the same markup: the attributes sorted by name (``clean_key``: ``class_``
    is ``class``, ``data_x`` is ``data-x``), ``True`` the bare name, ``False`` left out, any other value escaped
    (markupsafe's ``escape``) with its double quotes written ``&quot;``, the name escaped too. WTForms' writes each
    attribute through ``Markup.format``, whose formatter is the string module's, in Python: a hidden box's four
    attributes ~37 us there, ~9 us here; WTForms' was a tenth of the invoice page's CPU (~15 boxes a page)."""
    params = []
    for key, value in sorted(kwargs.items()):
        key = clean_key(key)
        if value is True:
            params.append(str(escape(key)))
        elif value is not False:
            value = str(escape(value)).replace('"', "&quot;")
            params.append(f'{escape(key)}="{value}"')
    return Markup(" ".join(params))  # noqa: S704 - each name and value in it went through escape() above


def _quick(widget: Any) -> Any:
    """``widget``, drawing its attributes with :func:`html_params` when it is one of WTForms' ``<input>`` widgets
    (their ``html_params`` is a class attribute for this: ``Input.__call__`` asks ``self.html_params``) that uses
    WTForms' own; else ``widget`` as it is (a select, a text area, a widget of its own)."""
    if isinstance(widget, Input) and widget.html_params is wtforms_html_params:
        widget = copy.copy(widget)  # the field's widget is its class's, shared by every form: a copy of it
        widget.html_params = html_params
    return widget


class _Checked:
    """What every form of the pages adds to WTForms': its messages in the user's language (WTForms merges the
    ``Meta`` of every class of the form), a text box holding a control character refused
    (:func:`no_control_characters`), and its ``<input>`` boxes drawn with :func:`html_params` (the same markup).
    First among a form's bases, so its ``validate`` runs WTForms' own."""

    class Meta:
        def get_translations(self, form: Any) -> PortalTranslations:
            return TRANSLATIONS

        def render_field(self, field: Any, render_kw: dict[str, Any]) -> Any:
            """WTForms' ``DefaultMeta.render_field`` (the field's ``render_kw`` under the call's own), its
            ``<input>`` widget through :func:`_quick`."""
            render_kw = {clean_key(k): v for k, v in render_kw.items()}
            other_kw = getattr(field, "render_kw", None)
            if other_kw is not None:
                render_kw = dict({clean_key(k): v for k, v in other_kw.items()}, **render_kw)
            return _quick(field.widget)(field, **render_kw)

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)  # the form class's next base: WTForms'
        return no_control_characters(self) and ok


class FlaskForm(_Checked, _FlaskForm):
    """Every form of the pages (CSRF token, validation), translated and checked (:class:`_Checked`)."""


class Form(_Checked, _Form):
    """A form inside a form (a FormField's rows: the weekly windows), translated and checked as :class:`FlaskForm`."""


class Pattern(Regexp):
    """A box's text matched whole against ``regex``, its ``\\d`` and ``\\w`` ASCII only. WTForms' Regexp takes
    Python's: ``\\d`` any script's digits (``١``, full-width ``１``) and ``$`` a new line after the text, which
    went on to the back-ends as typed (a price's version into ``If-Match``: a 500, the header unencodable)."""

    def __init__(self, regex: str, message: Any = None) -> None:
        super().__init__(re.compile(regex, re.ASCII), message=message, matcher=re.fullmatch)


FORM_KEY = re.compile(r"[0-9a-f]{32}")  # a form's key as the pages make it (uuid4().hex)


class FormKey(HiddenField):
    """A form's key, made when the page is shown (``uuid.uuid4().hex``) and posted back with it, so that a
    second click sends the same ``Idempotency-Key`` or transaction id to the back-end. Only a key as the
    pages make it is taken: anything else posted (a new line, an emoji, 100 kB) is no key (``data`` None,
    and the caller makes a new one), never put into a back-end's request header, where it was a 500 (the
    header unsendable)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        posted = str(valuelist[0]) if valuelist else ""
        self.data = posted if FORM_KEY.fullmatch(posted) else None


class WholeField(IntegerField):
    """A whole number in a text box (days, minutes): text that is no whole number (nothing typed, ``abc``,
    ``7.5``) is the one message ``invalid`` (the range the field takes, say), not WTForms' "Not a valid
    integer value." followed by the range's message as well."""

    def __init__(self, label: Any = None, validators: Any = None, *, invalid: Any = None, **kwargs: Any) -> None:
        super().__init__(label, validators, **kwargs)
        self.invalid = invalid or _l("Write a whole number.")

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata([str(v).strip() for v in valuelist])
        except ValueError:
            raise ValueError(str(self.invalid)) from None

    def pre_validate(self, form: Any) -> None:
        if self.process_errors:
            raise StopValidation()


class LocalDateField(DateField):
    """A date as the pages write dates, ``dd/mm/yyyy`` (Vietnamese conventions in both languages,
    formatting.day), in a text box with that pattern as its hint in the user's language. Chromium's
    ``<input type=date>`` shows the browser build's own format (mm/dd/yyyy in headless Chromium)
    whatever the page's ``lang``; a text box shows what the page says. ``dd/mm/yyyy``,
    ``d/m/yyyy`` and ISO ``yyyy-mm-dd`` are read; a wrong date is explained by the server in the
    user's language (no ``pattern``: the browser would explain it in its own)."""

    widget = TextInput()
    FORMATS = ("%d/%m/%Y", "%Y-%m-%d", "%d-%m-%Y", "%d.%m.%Y")
    FIRST, LAST = date(1800, 1, 1), date(2999, 12, 31)  # the years a date box takes

    def __init__(self, label: Any = None, validators: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("format", list(self.FORMATS))
        # WTForms' own "Not a valid date value." is English on every page
        kwargs.setdefault("invalid_value_message", _l("Enter the date as day/month/year, e.g. 05/12/2026."))
        super().__init__(label, validators, **kwargs)

    def __call__(self, **kwargs: Any) -> Any:
        from flask_babel import get_locale

        kwargs.setdefault("autocomplete", "off")
        kwargs.setdefault("placeholder", str(_l("dd/mm/yyyy")))
        kwargs.setdefault("lang", str(get_locale() or "vi"))
        return super().__call__(**kwargs)

    def process_formdata(self, valuelist: list[Any]) -> None:
        """As DateField's; a day/month/year written right that is no day of the calendar (31/02/1980,
        29/02/2023) is said so, with the date as typed, instead of the format's hint."""
        try:
            super().process_formdata(valuelist)
        except ValueError:
            missing = not_in_calendar(" ".join(str(v) for v in valuelist))
            if missing is None:
                raise
            raise ValueError(str(_l("The date %(date)s does not exist.", date=missing))) from None
        if self.data is not None and not self.FIRST <= self.data <= self.LAST:
            # the calendar's edge (31/12/9999, 01/01/0001): the pages' days after or before it overflow
            self.data = None
            raise ValueError(str(_l("Enter a date between %(first)s and %(last)s.",
                                    first=self.FIRST.strftime("%d/%m/%Y"), last=self.LAST.strftime("%d/%m/%Y"))))

    def _value(self) -> str:
        if self.raw_data:
            return " ".join(self.raw_data)
        return self.data.strftime("%d/%m/%Y") if self.data else ""


_DMY = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
_YMD = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")


def not_in_calendar(text: str) -> str | None:
    """``dd/mm/yyyy`` of a date written in one of :class:`LocalDateField`'s forms whose day (1-31) and
    month (1-12) are each possible but together no day of that year (31/02, 31/04, 29/02/2023); None
    for anything else (a real date, or text that is no date: the format's hint explains that)."""
    text = text.strip()
    if m := _DMY.fullmatch(text):
        day, month, year = (int(g) for g in m.groups())
    elif m := _YMD.fullmatch(text):
        year, month, day = (int(g) for g in m.groups())
    else:
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31) or year < 1:
        return None
    try:
        date(year, month, day)
    except ValueError:
        return f"{day:02d}/{month:02d}/{year:04d}"
    return None


PRIORITIES = [("routine", _l("Routine")), ("urgent", _l("Urgent")), ("asap", _l("As soon as possible")),
              ("stat", _l("Emergency (stat)"))]


class LoginForm(FlaskForm):
    username = StringField(_l("User name"), validators=[DataRequired(_l("Enter your user name.")),
                                                        Length(max=100)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")),
                                                         Length(max=200)])
    next = HiddenField()


class PatientSearchForm(FlaskForm):
    q = StringField(_l("Name, CCCD or health insurance number"),
                    validators=[DataRequired(_l("Type a name, a CCCD or an insurance number.")),
                                Length(min=2, max=100, message=_l("Type 2 to 100 characters."))])


class InvoiceSearchForm(FlaskForm):
    q = StringField(_l("Patient's name, phone or payment reference"),
                    validators=[DataRequired(_l("Type a patient's name, phone or a reference (HD...).")),
                                Length(min=2, max=100, message=_l("Type 2 to 100 characters."))])


OLDEST_YEARS = 120  # a date of birth further back is a typing mistake (the year), not a patient


def _plausible_birth(form: FlaskForm, field: DateField) -> None:
    """A date of birth neither in the future nor more than :data:`OLDEST_YEARS` years ago (Vietnam's day)."""
    from .formatting import today as vietnam_today

    if not field.data:
        return
    today = vietnam_today()
    if field.data > today:
        raise ValidationError(_l("The date of birth cannot be in the future."))
    oldest = date(today.year - OLDEST_YEARS, today.month, 28 if (today.month, today.day) == (2, 29) else today.day)
    if field.data < oldest:
        raise ValidationError(_l("The date of birth %(date)s is more than %(years)d years ago: check the year.",
                                 date=field.data.strftime("%d/%m/%Y"), years=OLDEST_YEARS))


_PHONE_MARKS = re.compile(r"[\s.\-()\u00a0]+")


def phone_number(value: Any) -> Any:
    """A phone number as Vietnamese numbers are written and stored, ``0912345678``, from the ways it is typed:
    spaces, dots, dashes or brackets between the digits (``0912 345 678``, ``0912.345.678``) and the country
    code (``+84 912 345 678``, ``84912345678``, ``(+84) 912...``) for the leading 0. Anything else is left as
    typed, for the field's check to refuse."""
    if not isinstance(value, str):
        return value
    compact = _PHONE_MARKS.sub("", value.strip())
    if re.fullmatch(r"\+?840\d{9,10}", compact):  # +84 0912 ...: the 0 kept after the country code
        return compact.lstrip("+")[2:]
    if re.fullmatch(r"\+?84[1-9]\d{8,9}", compact):
        return "0" + compact.lstrip("+")[2:]
    return compact if re.fullmatch(r"0\d{9,10}", compact) else value


def composed(value: Any) -> Any:
    """Typed text in Unicode's composed form (NFC: "ễ" one character, as a Mac's keyboard may send it in
    three), its ends trimmed: the text stored, searched and compared."""
    return unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else value


NAME_SEPARATORS = frozenset(" -'’.")  # between a name's words: space, hyphen, apostrophe (' or a phone's ’), dot


class PersonName:
    """A person's name as written on their papers: letters of any script with their combining marks
    (Vietnamese with its diacritics, the names of the ethnic minorities, "H'Hen Niê", Khmer script), a letter
    first, spaces, hyphens, apostrophes and dots between the words; no digit, symbol, emoji ("Nguyễn Thị 🌸
    Hoa" was registered), control or invisible character. Letters and marks as Unicode's categories say
    (L*, M*): Python's ``\\w`` takes digits and ``_`` and leaves out marks that stand alone (Khmer vowel signs).
    The EHR takes any FHIR string as a name (a FHIR server must); the portal's registration is where names are
    typed. Use with :func:`composed` as the field's filter."""

    def __init__(self, message: Any) -> None:
        self.message = message

    def __call__(self, form: Any, field: Any) -> None:
        text = field.data or ""
        if text and not (unicodedata.category(text[0])[0] == "L" and all(
                unicodedata.category(ch)[0] in "LM" or ch in NAME_SEPARATORS for ch in text)):
            raise ValidationError(self.message)


class PatientForm(FlaskForm):
    family = StringField(_l("Family name"), filters=[composed], validators=[
        DataRequired(_l("Enter the family name.")), Length(max=60), PersonName(_l(
            "The family name may hold only letters, spaces, hyphens (-), apostrophes (') and dots."))])
    given = StringField(_l("Middle and given names"), filters=[composed], validators=[
        DataRequired(_l("Enter the middle and given names.")), Length(max=100), PersonName(_l(
            "The middle and given names may hold only letters, spaces, hyphens (-), apostrophes (') and dots."))])
    gender = RadioField(_l("Sex"), choices=[("female", _l("Female")), ("male", _l("Male")), ("other", _l("Other"))],
                        validators=[InputRequired(_l("Choose the sex."))])
    birth_date = LocalDateField(_l("Date of birth"), validators=[InputRequired(_l("Enter a valid date of birth.")),
                                                            _plausible_birth])
    cccd = StringField(_l("CCCD (citizen ID, 12 digits)"), validators=[
        Optional(), Pattern(r"\d{12}", message=_l("A CCCD has exactly 12 digits."))])
    bhyt = StringField(_l("Health insurance number (15 characters)"), validators=[
        Optional(), Pattern(r"[A-Za-z]{2}\d{13}", message=_l("An insurance number is 2 letters then 13 digits."))])
    phone = StringField(_l("Phone"), filters=[phone_number], validators=[
        Optional(), Pattern(r"0\d{9,10}", message=_l(
            "A phone number has 10 or 11 digits starting with 0 (or +84 in place of the 0)."))])
    district = StringField(_l("District"), validators=[Optional(), Length(max=100)])


# why a patient is taken on here, as the EHR records it (in Vietnamese, as the records are; the label in the
# page's language); "other": the nurse writes it. The first is preselected.
TAKE_ON_REASONS = [
    ("Người bệnh đến khám tại cơ sở", _l("The patient came to this facility for care")),
    ("Người bệnh được chuyển đến cơ sở", _l("The patient was referred to this facility")),
    ("Cấp cứu tại cơ sở", _l("Emergency care at this facility")),
    ("other", _l("Other")),
]
TAKE_ON_REASON_MAX = 500  # the EHR's $take-on keeps a reason of 1 to 500 characters


class TakeOnForm(FlaskForm):
    """Take a patient registered at another facility on here: the card's full number the nurse typed on
    the registration page (sent back, never in a URL) and which card it is; why (a reason chosen, or
    written under "Other"), which the health record keeps with who did it."""

    reason = RadioField(_l("Why is the patient taken on here?"), choices=TAKE_ON_REASONS,
                        default=TAKE_ON_REASONS[0][0], validators=[InputRequired(_l("Choose the reason."))])
    other = StringField(_l("The reason, when it is another"), validators=[
        Length(max=TAKE_ON_REASON_MAX, message=_l("Write at most %(max)d characters.", max=TAKE_ON_REASON_MAX))])

    system = HiddenField(validators=[DataRequired(), Pattern(r"cccd|bhyt")])
    number = HiddenField(validators=[DataRequired(), Pattern(r"\d{12}|[A-Za-z]{2}\d{13}")])
    # what the registration form had (none from a search): the chart says where the record differs
    family = HiddenField(validators=[Optional(), Length(max=60)])
    given = HiddenField(validators=[Optional(), Length(max=100)])
    birth_date = HiddenField(validators=[Optional(), Pattern(r"\d{4}-\d{2}-\d{2}")])
    gender = HiddenField(validators=[Optional(), Pattern(r"female|male|other")])

    def validate_other(self, field: Any) -> None:
        if self.reason.data == "other" and not (field.data or "").strip():
            raise ValidationError(_l("Write the reason."))

    def reason_text(self) -> str:
        """The reason the EHR keeps: the one chosen, or the one written under "Other"."""
        return (self.other.data or "").strip() if self.reason.data == "other" else str(self.reason.data)


class EndTakeOnForm(FlaskForm):
    """End the take-on of a patient at this facility (the EHR's ``$end-take-on``): why, and a tick the
    server checks, so no stray click closes a record."""

    reason = TextAreaField(_l("Reason for ending the take-on"),
                           validators=[DataRequired(_l("Give a reason.")), Length(max=500)])
    confirm = BooleanField(_l("I confirm: end the take-on of this patient at my facility. Their record will no "
                              "longer be open to our clinic."),
                           validators=[DataRequired(_l("Tick the box to confirm ending the take-on."))])


class ConsultForm(FlaskForm):
    patient = HiddenField(validators=[DataRequired(_l("Choose the patient first."))])
    priority = SelectField(_l("Priority"), choices=PRIORITIES, default="routine",
                           validators=[DataRequired(_l("Choose a priority."))])
    reason = StringField(_l("Reason (ICD-10)"), validators=[
        DataRequired(_l("Choose a reason from the ICD-10 list.")),
        Regexp(r"^[A-Z]\d{2}(\.\d{1,2})?\b", message=_l("Choose a reason from the ICD-10 list."))])
    question = TextAreaField(_l("Question for the specialist"),
                             validators=[DataRequired(_l("Write the question for the specialist.")),
                                         Length(min=10, max=4000, message=_l("Write 10 to 4000 characters."))])
    files = MultipleFileField(_l("Images and documents (PDF, JPEG, PNG, WebP; at most 1.5 MB each)"))


class ReasonForm(FlaskForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=2000)])


class VisitCancelForm(ReasonForm):
    """The doctor's cancel of a booked visit, with its reason; ``key``: this form's own, so a resubmission of
    it (its answer lost, sent again) sends the same ``Idempotency-Key`` (``doctor.visit_cancel``)."""

    key = FormKey()


class AnswerForm(FlaskForm):
    answer = TextAreaField(_l("Your answer"), validators=[DataRequired(_l("Write your answer.")), Length(max=4000)])


class QuestionForm(FlaskForm):
    question = TextAreaField(_l("Question for the clinic"),
                             validators=[DataRequired(_l("Write the question.")), Length(max=4000)])


class MessageForm(FlaskForm):
    """A message on the consult's thread (teleconsult's ``$message``); ``key``: this form's own, so a
    resubmission of it (a double click, a retry) sends the same ``Idempotency-Key`` (``clinic.send_message``)."""

    key = FormKey()
    text = TextAreaField(_l("Message"), validators=[DataRequired(_l("Write the message.")),
                                                    Length(max=4000, message=_l("Write at most 4000 characters."))])


class ReassignForm(FlaskForm):
    """A consult given to another doctor of the hub; ``key``: this form's own, kept through its confirmation
    step, so a resubmission sends the same ``Idempotency-Key`` (``doctor.task_reassign``)."""

    key = FormKey()
    practitioner = SelectField(_l("Give to"), validators=[DataRequired(_l("Choose a doctor."))])


class FindSlotForm(FlaskForm):
    """The free-time search: a GET (its fields in the query string, doctor.task_slots), which changes nothing."""

    class Meta:
        csrf = False

    start = LocalDateField(_l("From"), validators=[InputRequired(_l("Enter a date."))])
    days = WholeField(_l("Days"), default=7, invalid=_l("From 1 to 31 days."),
                      validators=[NumberRange(1, 31, _l("From 1 to 31 days."))])


MAX_DIAGNOSES = 20
UNKNOWN_NAMED = 10  # what is no ICD-10 code, named in the message (the rest: "…")
# the participants list goes to teleconsult as the chair's role (doctor.chair_role): its limit
# (PARTICIPANT_ROLE_MAX_CHARS), refused beyond, never cut
PARTICIPANTS_MAX = 2000


def minutes_people(participants: str, chair: str) -> list[str]:
    """Each person the minutes' participants text names ("<name> — <role>" entries, one a line or split by
    ";"; an entry without a role is a name), in order, once, the chair aside (``same_person``)."""
    found: list[str] = []
    for entry in (e.strip() for line in participants.splitlines() for e in line.split(";")):
        name = name_and_role(entry)[0]
        if name_key(name) and not same_person(name, chair) and not any(same_person(name, n) for n in found):
            found.append(name)
    return found


class MinutesForm(FlaskForm):
    """The teleconsultation minutes; ``diagnosis``: one or more ICD-10 codes (``codes`` once validated)."""

    codes: list[Any] = []

    participants = TextAreaField(_l("Participants and their roles"), validators=[
        DataRequired(_l("List the participants.")),
        Length(max=PARTICIPANTS_MAX, message=_l("At most %(max)d characters: the minutes keep the participants "
                                                "as written. Shorten the list.", max=PARTICIPANTS_MAX))])
    history = TextAreaField(_l("History and current state"),
                            validators=[DataRequired(_l("Summarise the history.")), Length(max=4000)])
    findings = TextAreaField(_l("Findings reviewed (clinical, lab, images)"),
                             validators=[DataRequired(_l("Write the findings.")), Length(max=4000)])
    discussion = TextAreaField(_l("Discussion"), validators=[Optional(), Length(max=4000)])
    conclusion = TextAreaField(_l("Conclusion"), validators=[DataRequired(_l("Write the conclusion.")),
                                                             Length(max=4000)])
    diagnosis = TextAreaField(_l("Diagnosis (ICD-10)"), validators=[
        DataRequired(_l("Choose a diagnosis from the ICD-10 list.")), Length(max=2000)])
    recommendations = TextAreaField(_l("Recommendations for treatment"),
                                    validators=[DataRequired(_l("Write the recommendations.")), Length(max=4000)])
    chair = StringField(_l("Chair who signs off"), validators=[DataRequired(_l("Name the chair.")),
                                                               Length(max=200)])
    # who took the minutes and signs them beside the chair (Circular 49/2017/TT-BYT): one of the participants,
    # chosen from them (the box suggests their names, ``people``) or typed; empty, the printed minutes' block is
    # signed and named by hand as before (a consult of two people has no one else to name)
    secretary = StringField(_l("Secretary"), filters=[lambda v: " ".join(v.split()) if isinstance(v, str) else v],
                            validators=[Optional(), Length(max=200)])

    def people(self) -> list[str]:
        """The names the participants box gives, one each, the chair's aside: the secretary box's suggestions."""
        return minutes_people(self.participants.data or "", self.chair.data or "")

    def validate_secretary(self, field: StringField) -> None:
        """One of the participants (by name whatever title either carries, as teleconsult checks it), not the
        chair, a name and not a title alone; what was typed stays in the box with the message."""
        if field.errors or not field.data:
            return
        if not name_key(field.data):
            raise ValidationError(_l("Write the secretary's name, not only a title."))
        if same_person(field.data, self.chair.data or ""):
            raise ValidationError(_l("The chair cannot also be the secretary: the minutes are signed by two "
                                     "people. Choose another participant."))
        if not any(same_person(field.data, n) for n in self.people()):
            raise ValidationError(_l("%(name)s is not among the participants above. Choose the secretary from "
                                     "the participants, or add them to the list.", name=field.data))

    def validate_diagnosis(self, field: TextAreaField) -> None:
        """One or more ICD-10 codes of the portal's list (icd10.parse_codes), kept in ``codes`` in the
        order written; anything else is named in the message (the typed text stays in the field)."""
        from . import icd10

        if field.errors:  # too long: its length alone, not also the whole text back as no code (100 kB echoed)
            return
        self.codes, unknown = icd10.parse_codes(field.data or "")
        if unknown:  # the first few named, each as typed but cut: the message is read, not the text again
            named = [u if len(u) <= 20 else u[:20] + "…" for u in unknown[:UNKNOWN_NAMED]]
            raise ValidationError(_l("Not in the ICD-10 list: %(codes)s. Write each diagnosis as its code "
                                     "(e.g. I10), separated by commas or new lines, or pick it from the "
                                     "suggestions.", codes=", ".join(named) + (", …" if len(unknown) > len(named)
                                                                               else "")))
        if not self.codes:
            raise ValidationError(_l("Choose a diagnosis from the ICD-10 list."))
        if len(self.codes) > MAX_DIAGNOSES:
            raise ValidationError(_l("At most %(n)s diagnoses.", n=MAX_DIAGNOSES))


HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
WEEK_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WindowForm(Form):
    """One weekly window of the hours: the days it applies to, from, to. A row with nothing in it
    is an empty row (the form always offers one to add a window) and is left out; a row with a time
    typed but no day ticked is refused (saving it without its days would drop it silently)."""

    days = SelectMultipleField(_l("Days of the week"), choices=[(d, d) for d in WEEK_DAYS],
                               validators=[Optional()])
    start_time = StringField(_l("From"), validators=[Optional(), Pattern(HHMM, message=_l("Use HH:MM."))])
    end_time = StringField(_l("To"), validators=[Optional(), Pattern(HHMM, message=_l("Use HH:MM."))])

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        if not self.days.data:
            if (self.start_time.data or "").strip() or (self.end_time.data or "").strip():
                self.days.errors = [*self.days.errors, str(_l(
                    "Tick the days of these hours, or empty both times to remove the window."))]
                return False
            return ok
        for f in (self.start_time, self.end_time):  # Optional() above lets an empty row through, not a ticked one
            if not f.data and not f.errors:
                f.errors = [*f.errors, str(_l("Enter the start and the end of the hours."))]
                ok = False
        if ok and self.end_time.data <= self.start_time.data:
            self.end_time.errors = [*self.end_time.errors, str(_l("The end is before the start."))]
            ok = False
        return ok


class AvailabilityForm(FlaskForm):
    """The weekly hours: several windows (e.g. morning and afternoon on the same days) and one slot length."""

    windows = FieldList(FormField(WindowForm), min_entries=1, max_entries=14)
    slot_minutes = WholeField(_l("Slot length (minutes)"), default=30, invalid=_l("From 10 to 120 minutes."),
                              validators=[NumberRange(10, 120, _l("From 10 to 120 minutes."))])

    def filled(self) -> list[WindowForm]:
        return [entry.form for entry in self.windows if entry.form.days.data]

    def validate_windows(self, field: FieldList) -> None:
        rows = self.filled()
        if not rows:
            if any(entry.form.errors for entry in self.windows):  # a row's own error says it (days to tick)
                return
            raise ValidationError(str(_l("Choose at least one day.")))  # a str: the page tells it from rows
        rows = [r for r in rows if not r.errors]  # a wrong time is its own error: no overlap guessed from it
        for i, a in enumerate(rows):  # two windows on a shared day must not overlap (slots would clash)
            for b in rows[:i]:
                if set(a.days.data) & set(b.days.data) and a.start_time.data and b.end_time.data \
                        and a.start_time.data < b.end_time.data and b.start_time.data < a.end_time.data:
                    a.end_time.errors = [*a.end_time.errors, str(_l("It overlaps another window on the same day."))]
                    raise ValidationError(str(_l("Two windows overlap on the same day.")))


class LeaveForm(FlaskForm):
    start = LocalDateField(_l("First day"), validators=[InputRequired(_l("Enter a date."))])
    end = LocalDateField(_l("Last day"), validators=[InputRequired(_l("Enter a date."))])
    reason = StringField(_l("Reason"), validators=[Optional(), Length(max=200)])

    def validate_end(self, field: DateField) -> None:
        from .formatting import today as vietnam_today

        if self.start.data and field.data and field.data < self.start.data:
            raise ValidationError(_l("The last day is before the first."))
        if field.data and field.data < vietnam_today():  # over: it frees no slot, and reads as a slip of the year
            raise ValidationError(_l("The last day (%(date)s) has passed: leave can be added from today (%(today)s) "
                                     "on.", date=field.data.strftime("%d/%m/%Y"),
                                     today=vietnam_today().strftime("%d/%m/%Y")))


class DashboardFilter(FlaskForm):
    class Meta:
        csrf = False  # a GET filter changes nothing

    start = LocalDateField(_l("From"), validators=[Optional()])
    end = LocalDateField(_l("To"), validators=[Optional()])
    district = StringField(_l("District"), validators=[Optional(), Length(max=200)])
    facility = StringField(_l("Facility"), validators=[Optional(), Length(max=200)])


class InvoiceCancelForm(FlaskForm):
    """Cancel an invoice made by mistake (billing takes a reason of 1-500 characters)."""
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=500)])
    txn = FormKey()  # the cancel's key, made when the page is shown: sent again, billing replays the cancel


class VndField(StringField):
    """An amount in đồng typed the way the pages write amounts: ``50.000``, ``50 000``, ``50,000``,
    ``50000`` or ``50.000 ₫`` (formatting.parse_vnd); ``data`` is an int (None when empty), shown
    back as ``50.000``. A text box with the numeric keypad (``inputmode``): a ``type=number`` box
    empties ``50,000`` in the browser and WTForms' IntegerField refuses ``50.000`` in English.
    A value that is no amount is one message in the user's language (``invalid``), before the
    field's validators; one over ``maximum`` (billing's cap, :data:`MAX_VND`, unless the form's own
    is lower) says so with the limit, never sent to billing. Every money box of the pages is one."""

    def __init__(self, label: Any = None, validators: Any = None, *, maximum: int = MAX_VND,
                 invalid: Any = None, **kwargs: Any) -> None:
        kwargs["render_kw"] = {"inputmode": "numeric", "autocomplete": "off", **(kwargs.get("render_kw") or {})}
        super().__init__(label, validators, **kwargs)
        self.maximum = maximum
        self.invalid = invalid or _l("Write the amount in đồng, e.g. 50.000.")

    def process_formdata(self, valuelist: list[Any]) -> None:
        self.data = None
        text = str(valuelist[0]).strip() if valuelist else ""
        if valuelist:
            self.raw_data = [text]  # blanks alone are nothing typed (InputRequired, Optional)
        if text:
            try:
                self.data = parse_vnd(text, self.maximum)
            except AmountTooLarge:
                raise ValueError(too_large(self.maximum)) from None
            except ValueError:
                if _negative(text, self.maximum):
                    raise ValueError(str(_l("An amount cannot be negative: write it without the minus sign, "
                                            "e.g. 50.000."))) from None
                raise ValueError(str(self.invalid)) from None

    def pre_validate(self, form: Any) -> None:
        if self.process_errors:  # not an amount: that one message, not also "enter the amount" or a range
            raise StopValidation()

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return thousands(self.data) if isinstance(self.data, int) else ""


def _negative(text: str, maximum: int) -> bool:
    """``-50.000``, ``− 50 000 ₫``: an amount with a minus sign (ASCII, Unicode minus or a dash)."""
    if not re.match(r"[-\u2212\u2013\u2014]", text):
        return False
    try:
        parse_vnd(text[1:], maximum)
    except AmountTooLarge:
        return True
    except ValueError:
        return False
    return True


def too_large(maximum: int = MAX_VND) -> str:
    """The one message of an amount over the most a page takes, with that limit."""
    return str(_l("The amount is too large (at most %(max)s).", max=vnd(maximum)))


PAYMENT_ID = r"(?!\.\.?$)[^/?#\x00-\x1f\x7f]{1,300}"


class RefundForm(FlaskForm):
    # a payment's id as billing names it (``sepay:FT24…``): one segment of billing's path, never more
    payment = HiddenField(validators=[DataRequired(_l("Choose the payment to refund.")),
                                      Pattern(PAYMENT_ID, message=_l("Choose the payment to refund."))])
    amount = VndField(_l("Amount (đồng; empty: all that can be refunded)"),
                      validators=[Optional(), NumberRange(1, None, _l("More than 0 đồng."))])
    method = SelectField(_l("Refund by"), choices=[("cash", _l("Cash")), ("transfer", _l("Bank transfer"))],
                         default="cash")
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=500)])
    txn = FormKey()  # this form's key, made when the page is shown: a second click is the same refund


class CashForm(FlaskForm):
    amount = VndField(_l("Cash received (đồng)"), validators=[InputRequired(_l("Enter the amount.")),
                                                             NumberRange(1, None, _l("More than 0 đồng."))])
    # cash over what is left to pay: change given back (unticked), or all of it kept as the patient's credit
    keep_credit = BooleanField(_l("Keep what is over the amount due as the patient's credit (no change given)"))
    txn = FormKey()  # the cash's transactionId, made when the page is shown: a second click records nothing new


class ShiftOpenForm(FlaskForm):
    # asked, never assumed: an empty box is not 0 (the cashier counts the drawer; 0 typed is fine)
    opening_cash = VndField(_l("Cash in the drawer at the start (đồng)"), validators=[
        InputRequired(_l("Count the cash in the drawer and enter it (0 if there is none).")),
        NumberRange(0, None, _l("0 đồng or more."))])
    txn = FormKey()  # the open's key, made when the page is shown: sent again, billing replays the shift it opened


class ShiftCloseForm(FlaskForm):
    counted_cash = VndField(_l("Cash counted (đồng)"), validators=[
        InputRequired(_l("Count the cash and enter it.")), NumberRange(0, None, _l("0 đồng or more."))])
    counted_transfers = VndField(_l("Transfers on the bank statement (đồng)"), validators=[
        InputRequired(_l("Enter the transfers total.")), NumberRange(0, None, _l("0 đồng or more."))])
    # refunds by transfer in the shift, the statement's money out: billing compares the net (review: a refund by
    # transfer made a false difference at the close); empty when none went back
    counted_transfers_refunded = VndField(_l("Transfers sent back on the bank statement (đồng)"), validators=[
        Optional(), NumberRange(0, None, _l("0 đồng or more."))])
    note = TextAreaField(_l("Note"), validators=[Optional(), Length(max=500)])
    txn = FormKey()  # the close's key, made when the page is shown: sent again, billing replays the close

    def counted_net_transfers(self) -> int:
        """The statement's transfers in less those sent back, as billing compares them with the shift's."""
        return int(self.counted_transfers.data) - int(self.counted_transfers_refunded.data or 0)


class MatchForm(FlaskForm):
    payment = HiddenField(validators=[DataRequired()])
    invoice = StringField(_l("Invoice number"), validators=[DataRequired(_l("Enter the invoice.")),
                                                             Length(max=64)])
    txn = FormKey()  # the row's key, made when the queue is shown: sent again, billing replays the assignment
