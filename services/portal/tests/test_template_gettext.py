"""The templates' gettext (``web.install_template_gettext``): each request's own language, a ``force_locale``
block's inside it, and both languages in one process, one after the other, as Flask-Babel's own callables gave."""

from __future__ import annotations

from flask import render_template_string
from flask_babel import force_locale

from tests.support import portal_app, portal_signed_in

SAID = '{{ _("Sign out") }}|{{ ngettext("%(num)d consult in the list", "%(num)d consults in the list", 2) }}'


def test_each_request_reads_its_own_languages_catalog_and_a_forced_locale_its_own(tmp_path, monkeypatch):
    app = portal_app(tmp_path, monkeypatch)
    with app.test_request_context("/"):
        vi = render_template_string(SAID)
        with force_locale("en"):
            en = render_template_string(SAID)
        again = render_template_string(SAID)
    assert vi == again == "Đăng xuất|Danh sách có 2 ca hội chẩn", vi
    assert en == "Sign out|2 consults in the list", en
    # pages of two languages in turn: each its own (a catalog kept for one locale is never another's)
    vi_client, en_client = portal_signed_in(app, "clinic", "vi"), portal_signed_in(app, "doctor", "en")
    for _ in range(2):
        assert "Đăng xuất" in vi_client.get("/", follow_redirects=True).get_data(as_text=True)
        page = en_client.get("/", follow_redirects=True).get_data(as_text=True)
        assert "Sign out" in page and "Đăng xuất" not in page
