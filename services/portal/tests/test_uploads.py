# ruff: noqa: F811 - the client fixture imported from test_clinic_consult_page is a parameter by name
"""What the portal keeps of a consult's files and shows again, told by their bytes (``sen_portal.web.uploads``):
PDF, JPEG, PNG and WebP. A phone's WebP photo, small enough to need no shrinking in the browser, was refused as
the wrong type ('chỉ đính kèm được tệp PDF, JPEG và PNG'); it is now taken when its bytes are a WebP's (RIFF, the
size, WEBP) and shown back from the record as an image/webp, while a file declared WebP that is none, and a WebP
declared as another type, are refused by name as before. Flask's test client; the EHR and teleconsult faked."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from sen_portal.web import uploads

from services.portal.tests.test_clinic_consult_page import (  # noqa: F401 - client: a fixture
    Backends,
    client,
    sent_with_files,
    sign_in,
)


def picture(fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 90)).save(out, fmt, **save)
    return out.getvalue()


WEBP = picture("WEBP", quality=80)  # lossy: RIFF....WEBPVP8
WEBP_LOSSLESS = picture("WEBP", lossless=True)  # RIFF....WEBPVP8L
PNG, JPEG = picture("PNG"), picture("JPEG")
PDF = b"%PDF-1.4\n% dien tim\n"


@pytest.mark.parametrize("kind,data", [("image/webp", WEBP), ("image/webp", WEBP_LOSSLESS), ("image/png", PNG),
                                       ("image/jpeg", JPEG), ("application/pdf", PDF)])
def test_a_file_is_what_its_first_bytes_say(kind, data) -> None:
    assert uploads.is_a(kind, data[:uploads.HEAD_BYTES])
    assert kind in uploads.TYPES and uploads.EXTENSION[kind]


@pytest.mark.parametrize("kind,data", [
    ("image/webp", b"RIFF\x24\x00\x00\x00WAVEfmt "),  # another RIFF file: a sound
    ("image/webp", b"RIFF"),  # cut short
    ("image/webp", b""),
    ("image/webp", JPEG),  # a JPEG named .webp
    ("image/webp", b"WEBPRIFF\x00\x00\x00\x00"),
    ("image/png", WEBP),  # a WebP named .png
    ("image/jpeg", PNG),
    ("application/pdf", b"PDF-1.4"),
    ("image/gif", b"GIF89a\x01\x00\x01\x00"),  # not a type the portal takes
    ("text/plain", b"ghi chu"),
])
def test_a_file_whose_bytes_are_not_its_declared_type_is_not(kind, data) -> None:
    assert not uploads.is_a(kind, data[:uploads.HEAD_BYTES])


@pytest.mark.parametrize("form", ["consult", "answer"])
def test_a_small_webp_photo_is_attached_as_a_webp(client, monkeypatch, form) -> None:
    """Sent with the consult or the answer: its DocumentReference carries it inline as image/webp, its bytes as
    chosen (failed before: refused as the wrong type, nothing sent)."""
    backends = Backends(monkeypatch)
    backends.on_hold()
    sign_in(client)
    page, r = sent_with_files(client, form, [(io.BytesIO(WEBP), "ngon-tay.webp", "image/webp")])
    assert 'accept="application/pdf,image/jpeg,image/png,image/webp"' in page
    assert r.status_code in (302, 303, 200), r.get_data(as_text=True)[:500]
    docs = [body for path, body in backends.posted if path == "/fhir/DocumentReference"]
    assert len(docs) == 1
    attachment = docs[0]["content"][0]["attachment"]
    assert attachment["contentType"] == "image/webp" and base64.b64decode(attachment["data"]) == WEBP


@pytest.mark.parametrize("name,kind,data,said", [
    ("ngon-tay.webp", "image/webp", b"ghi chu: huyet ap cao\n",
     "ngon-tay.webp không thực sự là tệp PDF, JPEG, PNG hay WebP"),
    ("anh.gif", "image/gif", b"GIF89a\x01\x00\x01\x00", "anh.gif: chỉ đính kèm được tệp PDF, JPEG, PNG và WebP."),
], ids=["not-a-webp", "a-gif"])
def test_a_file_not_taken_is_refused_by_name_in_vietnamese(client, monkeypatch, name, kind, data, said) -> None:
    backends = Backends(monkeypatch)
    sign_in(client)
    _page, r = sent_with_files(client, "consult", [(io.BytesIO(data), name, kind)])
    assert r.status_code == 422 and not backends.posted
    assert said in r.get_data(as_text=True)


def test_a_webp_kept_in_the_record_opens_as_one(client, monkeypatch) -> None:
    """``/documents/<id>`` shows a stored WebP as image/webp, sandboxed and not sniffed; bytes declared WebP that
    are none are not shown (415, in the page's words)."""
    from sen_portal.web import clinic

    stored = {"webp": WEBP, "fake": b"<script>alert(1)</script>"}
    monkeypatch.setattr(clinic, "fhir_get", lambda service, path, *a, **kw: {
        "resourceType": "DocumentReference", "id": path.rsplit("/", 1)[-1], "content": [{"attachment": {
            "contentType": "image/webp", "data": base64.b64encode(stored[path.rsplit("/", 1)[-1]]).decode()}}]})
    sign_in(client, "doctor")
    r = client.get("/documents/webp")
    assert r.status_code == 200 and r.data == WEBP and r.mimetype == "image/webp"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"].startswith("sandbox")
    assert r.headers["Content-Disposition"] == 'inline; filename="tai-lieu-webp.webp"'
    r = client.get("/documents/fake")
    assert r.status_code == 415
    assert "Chỉ mở được tại đây các tệp PDF, JPEG, PNG và WebP lưu trong hồ sơ." in r.get_data(as_text=True)
