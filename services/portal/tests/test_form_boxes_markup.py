"""The pages' ``<input>`` boxes are drawn by the portal's ``html_params`` (forms.py: WTForms' helper wrote each
attribute through ``Markup.format``, a tenth of the invoice page's CPU). The markup must be WTForms' own, byte
for byte, whatever the values hold: every field of every form of the portal, empty and filled with what needs
escaping, drawn through the forms' ``Meta`` and through WTForms' own widget, with the attributes the templates
pass (``aria-*``, ``data-*``, ``class_``, ``True`` and ``False`` ones)."""

from __future__ import annotations

import pytest
import wtforms
from markupsafe import Markup
from werkzeug.datastructures import MultiDict
from wtforms.widgets.core import html_params as wtforms_html_params

from tests.support import portal_app

from .test_forms_i18n import FORMS, _fields

NASTY = ['a"b', "<script>alert('x')</script>", "x & y &amp; z", "Nguyễn Văn An", "", " ", "\u00a0é\u200b",
         "&#34;", "'single'", "{k}={v}", "%(x)s"]
ATTRS = [{}, {"aria_describedby": 'hint "x"', "aria_invalid": "true"}, {"class_": "wide <b>", "data_testid": "t"},
         {"autocomplete": "off", "required": True, "readonly": False, "disabled": False},
         {"placeholder": Markup('already "safe" <i>')}, {"value": 'over "ride"', "data_x": 0, "data_y": None}]


@pytest.fixture
def app(tmp_path, monkeypatch):
    return portal_app(tmp_path, monkeypatch)


ODD_NAMES = {"a_": 1, "data_a_b": 2, "aria_c": 3, "b": True, 'on"x<': "y", 'c<"': True}


@pytest.mark.parametrize("kwargs", [*ATTRS, *({"v": v} for v in NASTY), ODD_NAMES])
def test_html_params_writes_what_wtforms_writes(kwargs):
    from sen_portal.web.forms import html_params

    assert html_params(**kwargs) == wtforms_html_params(**kwargs)
    assert isinstance(html_params(**kwargs), Markup)


@pytest.mark.parametrize("cls", FORMS, ids=lambda c: c.__name__)
def test_every_box_of_every_form_is_drawn_as_wtforms_draws_it(app, cls):
    drawn = 0
    with app.test_request_context("/", method="POST"):
        names = [f.name for f in _fields(cls(formdata=None, meta={"csrf": False}))]
        for value in NASTY[:5]:
            for form in (cls(formdata=None), cls(formdata=MultiDict([(n, value) for n in names]))):
                for field in _fields(form):
                    if getattr(field, "choices", ()) is None:  # filled by the page (the doctors to give a task to)
                        field.choices = [("known", "Known")]
                    for attrs in ATTRS:
                        ours = field(**attrs)
                        kept, field.meta = field.meta, wtforms.meta.DefaultMeta()  # WTForms' own render_field
                        try:
                            theirs = field(**attrs)
                        finally:
                            field.meta = kept
                        assert ours == theirs, (field.name, attrs)
                        assert isinstance(ours, Markup)
                        drawn += isinstance(field.widget, wtforms.widgets.Input)
    assert drawn or not any(isinstance(f.widget, wtforms.widgets.Input) for f in _fields(cls(formdata=None)))


@pytest.mark.parametrize("cls", FORMS, ids=lambda c: c.__name__)
def test_the_field_macro_writes_each_label_as_wtforms_does(app, cls):
    """_form.html's ``field`` writes a box's label itself: the same markup as WTForms' ``f.label()``."""
    with app.test_request_context("/"):
        macro = app.jinja_env.get_template("_form.html").module.field
        for form in (cls(formdata=None), cls(formdata=MultiDict({f.name: '<b>"x"</b>' for f in _fields(cls())}))):
            for field in _fields(form):
                if field.type in ("FileField", "MultipleFileField"):
                    continue  # its name is a span (the macro's own markup)
                if getattr(field, "choices", ()) is None:
                    field.choices = [("known", "Known")]
                drawn = str(macro(field))
                assert str(field.label()) in drawn, (field.name, drawn[:300])
        odd = cls(formdata=None)
        for field in _fields(odd)[:1]:
            field.label.field_id, field.label.text = 'a"<b>', Markup("<abbr>BHYT</abbr> & \"x\"")
            assert str(field.label()) in str(macro(field))


def test_the_quick_box_is_a_copy_and_a_widget_of_its_own_keeps_its_params():
    from sen_portal.web.forms import _quick, html_params

    shared = wtforms.StringField.widget
    quick = _quick(shared)
    assert quick is not shared and quick.html_params is html_params
    assert shared.html_params is wtforms_html_params  # the class's widget, every other form's, untouched

    class Own(wtforms.widgets.TextInput):
        html_params = staticmethod(lambda **kw: Markup("own"))

    own = Own()
    assert _quick(own) is own
    select = wtforms.widgets.Select()
    assert _quick(select) is select
