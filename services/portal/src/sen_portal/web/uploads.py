"""What a file attached to a consult may be, told by its first bytes: PDF, JPEG, PNG or WebP.

The browser declares a file's type (from its name); the portal keeps a file only when its bytes are what that type
says, and shows one from the record only then (``X-Content-Type-Options: nosniff``): a file named ``.png`` that is
none could never be opened. PDF, JPEG and PNG start with a fixed signature; WebP is a RIFF container whose form type
is ``WEBP`` (RFC 9649, section 2.4: ``RIFF``, the file's size in 4 bytes, then ``WEBP``), which phones and browsers
save photos as. No library for four signatures: Pillow would decode the whole picture to tell its kind, and a PDF is
none of its.
"""

from __future__ import annotations

TYPES = ("application/pdf", "image/jpeg", "image/png", "image/webp")  # what the consult and answer forms take
EXTENSION = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
HEAD_BYTES = 16  # what is read of a file to tell its kind (every signature below fits)
_STARTS = {"application/pdf": b"%PDF-", "image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}


def is_a(kind: str, head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes, :data:`HEAD_BYTES` or all of a shorter one) starts as a file of the
    declared ``kind`` (a MIME type of :data:`TYPES`) does; False for any other kind."""
    if kind == "image/webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    start = _STARTS.get(kind)
    return start is not None and head.startswith(start)
