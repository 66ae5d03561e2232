"""sen_shared.pdf: a printed document keeps its Vietnamese letters and fetches nothing, neither from the
network (a loopback server here counts the requests) nor from a file (a stylesheet that would add text)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sen_shared.pdf import FONT_FAMILY, html_to_pdf

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler's pdftotext reads the PDF")


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "d.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def server():
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            body = b"p::after { content: ' FETCHED'; }"
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", asked
    httpd.shutdown()
    httpd.server_close()


def test_the_letters_print_with_their_tone_marks(tmp_path):
    html = (f"<!doctype html><html lang=vi><head><meta charset=utf-8><style>body {{ font-family: {FONT_FAMILY}; }}"
            "</style></head><body><p>CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM — Độc lập - Tự do - Hạnh phúc — "
            "Đặng Thị Ngọc Ảnh, suy tim, tăng huyết áp</p></body></html>")
    text = _text(html_to_pdf(html), tmp_path)
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text and "Độc lập - Tự do - Hạnh phúc" in text, text
    assert "Đặng Thị Ngọc Ảnh, suy tim, tăng huyết áp" in text, text


def test_a_document_naming_urls_fetches_none_and_still_prints(tmp_path, server):
    base, asked = server
    css = tmp_path / "own.css"
    css.write_text("p::before { content: 'READ FROM A FILE '; }")
    html = (f"<!doctype html><html><head><meta charset=utf-8><link rel=stylesheet href='{base}/a.css'>"
            f"<link rel=stylesheet href='{css.as_uri()}'><link rel=stylesheet href='rel.css'>"
            f"<style>@import url('{base}/b.css');</style></head>"
            f"<body><p>Biên bản</p><img src='{base}/logo.png'><img src='{css.as_uri()}'></body></html>")
    text = _text(html_to_pdf(html), tmp_path)
    assert "Biên bản" in text
    assert asked == [], asked
    assert "FETCHED" not in text and "READ FROM A FILE" not in text, text


def test_weasyprints_own_fetcher_would_have_fetched_them(tmp_path, server):
    """The test above can fail: WeasyPrint's default fetcher reads both stylesheets."""
    from weasyprint import HTML

    base, asked = server
    css = tmp_path / "own.css"
    css.write_text("p::before { content: 'READ FROM A FILE '; }")
    html = (f"<!doctype html><html><head><link rel=stylesheet href='{base}/a.css'>"
            f"<link rel=stylesheet href='{css.as_uri()}'></head><body><p>Biên bản</p></body></html>")
    text = _text(HTML(string=html).write_pdf(), tmp_path)
    assert asked == ["/a.css"] and "FETCHED" in text and "READ FROM A FILE" in text, (asked, text)
