"""HTML printed as a PDF with WeasyPrint: billing's receipts, the portal's consult minutes.

One mechanism for every document Sen prints, so each prints the same way:

- its text in :data:`FONT_FAMILY`, DejaVu Sans first (every Vietnamese letter with its tone marks;
  Debian's ``fonts-dejavu-core``, which ``deploy/local/infra.sh packages`` and CI install), found by
  fontconfig: no font is fetched;
- nothing fetched at all: a document carries its CSS inline and names no image, and the URL fetcher
  (:class:`FetchNothing`) refuses every URL (http, https, ftp, data, file) without opening it, so text
  that looks like a link, or a template naming one by mistake, never makes the server reach the network
  or read a file. A refused URL leaves its resource out (WeasyPrint warns) and the document still prints;
- no base URL: a relative URL resolves to nothing.

WeasyPrint is imported on use: it loads pango, which only a process that prints needs; a service that
prints depends on ``weasyprint`` itself (billing, portal).
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("sen.pdf")

# the printed documents' text: DejaVu Sans has every Vietnamese letter (Noto Sans too, where installed)
FONT_FAMILY = '"DejaVu Sans", "Noto Sans", sans-serif'


class RefusedURL(ValueError):
    """A URL a printed document named: never fetched."""


@functools.cache
def _fetcher_class() -> type:
    from weasyprint.urls import URLFetcher

    class FetchNothing(URLFetcher):  # WeasyPrint's documented hook (its "URL Fetchers")
        """Refuses every URL, never opening one."""

        def fetch(self, url: str, headers: Any = None) -> Any:
            log.warning("a printed document named a URL: not fetched", extra={"scheme": urlsplit(url).scheme})
            raise RefusedURL("a printed document fetches nothing")

    return FetchNothing


def url_fetcher() -> Any:
    """The URL fetcher :func:`html_to_pdf` prints with: it fetches nothing."""
    return _fetcher_class()(allowed_protocols=(), allow_redirects=False)


def html_to_pdf(html: str) -> bytes:
    """``html`` (a whole document, its CSS inline, its page size and margins in its ``@page``) as PDF bytes."""
    from weasyprint import HTML  # imported on use: it loads pango

    return HTML(string=html, base_url=None, url_fetcher=url_fetcher()).write_pdf()
