"""The pages' words in the page's language, looked up once a render (web/__init__.py ``install_template_gettext``,
``translations``, ``said``): a template's ``_()`` reads the catalog the render's context carries, a status label
its translation kept by locale, and both follow a ``force_locale`` block (a print in Vietnamese from an English
session) as Flask-Babel's own lookups did."""

from __future__ import annotations

import flask_babel
import pytest
from flask import render_template_string, session
from flask_babel import force_locale

from tests.support import portal_app


@pytest.fixture
def app(tmp_path, monkeypatch):
    return portal_app(tmp_path, monkeypatch)


PAGE = "{{ _('Worklist') }}|{{ status_label('accepted') }}|{{ ngettext('%(num)d consult in the list', " \
       "'%(num)d consults in the list', 2) }}"


def test_the_words_follow_the_session_and_a_forced_language(app):
    with app.test_request_context("/worklist"):
        session["lang"] = "en"
        assert render_template_string(PAGE) == "Worklist|Accepted|2 consults in the list"
        with force_locale("vi"):
            assert render_template_string(PAGE) == "Danh sách công việc|Đã nhận|Danh sách có 2 ca hội chẩn"
        assert render_template_string(PAGE) == "Worklist|Accepted|2 consults in the list"
    with app.test_request_context("/worklist"):  # a new request in Vietnamese (the default)
        assert render_template_string(PAGE) == "Danh sách công việc|Đã nhận|Danh sách có 2 ca hội chẩn"


def test_a_render_looks_the_language_up_once_not_for_every_word(app, monkeypatch):
    """Flask-Babel's locale lookup (three reads of flask.g) ran for each ``_()`` of a page: 50 to 130 a page."""
    import sen_portal.web as web

    calls = []
    real = flask_babel.get_locale

    def counted():  # noqa: ANN202
        calls.append(1)
        return real()

    monkeypatch.setattr(web, "get_locale", counted)
    with app.test_request_context("/worklist"):
        session["lang"] = "en"
        words = render_template_string("{% for i in range(40) %}{{ _('Worklist') }} {% endfor %}")
    assert words.split() == ["Worklist"] * 40
    assert len(calls) <= 2, len(calls)


def test_a_patients_sex_and_a_consults_priority_follow_the_language(app):
    """``patients.sex_text`` and ``dashboard.priority_label`` (a worklist row's) translate their one label once a
    process and language (``web.said``): the same words as Flask-Babel's own lookups, in each language."""
    from sen_portal.web.dashboard import priority_label
    from sen_portal.web.patients import sex_text

    with app.test_request_context("/worklist"):
        session["lang"] = "en"
        assert (sex_text("female"), sex_text("male"), sex_text(None), sex_text("x")) == ("Female", "Male", "", "")
        assert (priority_label("urgent"), priority_label(None), priority_label("odd")) == ("Urgent", "—", "odd")
        with force_locale("vi"):
            assert (sex_text("female"), priority_label("urgent")) == ("Nữ", "Khẩn")
        assert (sex_text("female"), priority_label("urgent")) == ("Female", "Urgent")
    with app.test_request_context("/worklist"):  # Vietnamese, the default
        assert (sex_text("female"), priority_label("urgent")) == ("Nữ", "Khẩn")
