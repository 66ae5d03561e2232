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
