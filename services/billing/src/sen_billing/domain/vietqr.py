"""VietQR (NAPAS), the EMVCo merchant-presented QR payload: our own small builder and parser.

The payload is a list of TLV fields (2-digit tag, 2-digit length, value), in this order::

    00 "01"                    payload format indicator
    01 "12"                    point of initiation: dynamic (one bill, one amount)
    38 {00 "A000000727",       NAPAS's GUID
        01 {00 <BIN, 6 digits>, 01 <account, 1-19 characters>},
        02 "QRIBFTTA"}         service: transfer to an account
    53 "704"                   currency: VND (ISO 4217)
    54 <amount>                integer đồng, 1-13 digits, optional
    58 "VN"                    country
    62 {01 <bill reference>,   optional; additional data
        08 <purpose>}
    63 <CRC>                   CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over everything
                               before it INCLUDING "6304", as 4 upper-case hex digits, zero-padded

Lengths and characters are checked on both sides; the parser re-computes the CRC.

Bill references (``reference_code``, ``reference_candidates``, ``normalize_reference``...) are
``sen_shared.payment_reference``'s, one mechanism with the portal's search; named here too, as
billing's code has always called them.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sen_shared.payment_reference import (
    REFERENCE_LEN,
    REFERENCE_PREFIX,
    check_char,
    fold,
    normalize_reference,
    reference_candidates,
    reference_code,
)

NAPAS_GUID = "A000000727"
SERVICE_ACCOUNT = "QRIBFTTA"
CURRENCY_VND = "704"
COUNTRY = "VN"

MAX_AMOUNT_DIGITS = 13
MAX_ACCOUNT = 19
MAX_REFERENCE = 25
MAX_PURPOSE = 25

_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


class VietQrError(ValueError):
    """A value that cannot go in (builder) or a payload that is not a valid VietQR (parser)."""


@dataclass(frozen=True)
class VietQr:
    bin: str
    account: str
    amount: int | None = None
    reference: str | None = None
    purpose: str | None = None


# --------------------------------------------------------------------------- CRC

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR."""
    crc = 0xFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def crc_hex(text: str) -> str:
    """The CRC as EMVCo writes it: 4 upper-case hex digits, zero-padded (0x0EA2 is ``0EA2``).
    Computed by ``binascii.crc_hqx`` (the same polynomial, unreflected, here from 0xFFFF: that is
    CRC-16/CCITT-FALSE) in C; :func:`crc16_ccitt_false` is the table form the tests compare it with."""
    return f"{binascii.crc_hqx(text.encode('ascii'), 0xFFFF):04X}"


# --------------------------------------------------------------------------- builder

def _tlv(tag: str, value: str) -> str:
    if len(value) > 99:
        raise VietQrError(f"field {tag} is longer than 99 characters")
    return f"{tag}{len(value):02d}{value}"


def _check_text(name: str, value: str, maximum: int) -> str:
    if not value or len(value) > maximum:
        raise VietQrError(f"{name} must be 1 to {maximum} characters")
    if not _PRINTABLE.match(value):
        raise VietQrError(f"{name} may hold printable ASCII characters only (no diacritics)")
    return value


def build(qr: VietQr) -> str:
    """The payload for ``qr``; :class:`VietQrError` for a value that does not fit."""
    if not re.fullmatch(r"\d{6}", qr.bin or ""):
        raise VietQrError("the bank BIN must be 6 digits")
    account = _check_text("the account number", qr.account, MAX_ACCOUNT)
    if not re.fullmatch(r"[0-9A-Za-z]+", account):
        raise VietQrError("the account number may hold letters and digits only")
    merchant = _tlv("00", NAPAS_GUID) + _tlv("01", _tlv("00", qr.bin) + _tlv("01", account)) \
        + _tlv("02", SERVICE_ACCOUNT)
    out = _tlv("00", "01") + _tlv("01", "12") + _tlv("38", merchant) + _tlv("53", CURRENCY_VND)
    if qr.amount is not None:
        if isinstance(qr.amount, bool) or not isinstance(qr.amount, int) or qr.amount <= 0:
            raise VietQrError("the amount must be a positive integer (đồng)")
        text = str(qr.amount)
        if len(text) > MAX_AMOUNT_DIGITS:
            raise VietQrError(f"the amount must have at most {MAX_AMOUNT_DIGITS} digits")
        out += _tlv("54", text)
    out += _tlv("58", COUNTRY)
    extra = ""
    if qr.reference is not None:
        extra += _tlv("01", _check_text("the bill reference", qr.reference, MAX_REFERENCE))
    if qr.purpose is not None:
        extra += _tlv("08", _check_text("the purpose", qr.purpose, MAX_PURPOSE))
    if extra:
        out += _tlv("62", extra)
    out += "6304"
    return out + crc_hex(out)


# --------------------------------------------------------------------------- parser

def _fields(text: str, where: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(text):
        head = text[i:i + 4]
        if len(head) < 4 or not head.isdigit():
            raise VietQrError(f"{where}: a field header at position {i} is not 4 digits")
        tag, length = head[:2], int(head[2:])
        value = text[i + 4:i + 4 + length]
        if len(value) != length:
            raise VietQrError(f"{where}: field {tag} is cut short")
        out.append((tag, value))
        i += 4 + length
    return out


def parse(payload: str) -> VietQr:
    """The fields of a VietQR payload; :class:`VietQrError` when anything is off, the CRC included."""
    if not isinstance(payload, str) or not _PRINTABLE.match(payload) or len(payload) > 512:
        raise VietQrError("a payload is printable ASCII, at most 512 characters")
    if len(payload) < 8 or payload[-8:-4] != "6304":
        raise VietQrError("the payload does not end with a CRC field (6304 and 4 hex digits)")
    crc = payload[-4:]
    if not re.fullmatch(r"[0-9A-F]{4}", crc):
        raise VietQrError("the CRC must be 4 upper-case hex digits")
    if crc_hex(payload[:-4]) != crc:
        raise VietQrError(f"CRC mismatch: the payload says {crc}, its content gives {crc_hex(payload[:-4])}")
    fields = _fields(payload[:-8], "payload")
    tags = [t for t, _ in fields]
    if len(set(tags)) != len(tags):
        raise VietQrError("a tag appears twice")
    values = dict(fields)
    if values.get("00") != "01" or tags[0] != "00":
        raise VietQrError("field 00 (payload format) must come first and be 01")
    if values.get("01") not in ("11", "12"):
        raise VietQrError("field 01 (initiation) must be 11 or 12")
    if values.get("53") != CURRENCY_VND:
        raise VietQrError("field 53 (currency) must be 704 (VND)")
    if values.get("58") != COUNTRY:
        raise VietQrError("field 58 (country) must be VN")
    if "38" not in values:
        raise VietQrError("field 38 (NAPAS merchant account) is missing")
    merchant = dict(_fields(values["38"], "field 38"))
    if merchant.get("00") != NAPAS_GUID:
        raise VietQrError(f"field 38.00 must be {NAPAS_GUID}")
    if merchant.get("02") != SERVICE_ACCOUNT:
        raise VietQrError(f"field 38.02 must be {SERVICE_ACCOUNT}")
    beneficiary = dict(_fields(merchant.get("01", ""), "field 38.01"))
    bin_, account = beneficiary.get("00", ""), beneficiary.get("01", "")
    if not re.fullmatch(r"\d{6}", bin_):
        raise VietQrError("field 38.01.00 (BIN) must be 6 digits")
    if not re.fullmatch(rf"[0-9A-Za-z]{{1,{MAX_ACCOUNT}}}", account):
        raise VietQrError(f"field 38.01.01 (account) must be 1 to {MAX_ACCOUNT} letters or digits")
    amount = None
    if "54" in values:
        if not re.fullmatch(rf"[1-9]\d{{0,{MAX_AMOUNT_DIGITS - 1}}}", values["54"]):
            raise VietQrError("field 54 (amount) must be a positive integer of at most 13 digits")
        amount = int(values["54"])
    reference = purpose = None
    if "62" in values:
        extra = dict(_fields(values["62"], "field 62"))
        reference, purpose = extra.get("01"), extra.get("08")
        if reference is not None and len(reference) > MAX_REFERENCE:
            raise VietQrError("field 62.01 (bill reference) is too long")
        if purpose is not None and len(purpose) > MAX_PURPOSE:
            raise VietQrError("field 62.08 (purpose) is too long")
    return VietQr(bin=bin_, account=account, amount=amount, reference=reference, purpose=purpose)


# --------------------------------------------------------------------------- images

# A cashier's screen shows one invoice's code again and again (the status page polls): the
# images of the last payloads are kept (a payload is immutable, so a cached image is never stale).
QR_MASK = 2


@functools.lru_cache(maxsize=512)
def _qr(payload: str):  # noqa: ANN202 - segno.QRCode
    import segno

    # A fixed mask (segno's ``mask=``): any of the eight is a valid QR code that every reader
    # undoes from the format information; letting segno score all eight (pure Python) took 85 %
    # of a new PNG's time. Pattern 2 (every third column) is also the quickest to apply.
    return segno.make_qr(payload, error="m", mask=QR_MASK)


@functools.lru_cache(maxsize=512)
def png(payload: str, *, scale: int = 6, border: int = 4) -> bytes:
    """The payload as a PNG QR code: segno's symbol (error correction M, mask pattern 2) written as
    a 1-bit greyscale PNG with a ``border``-module quiet zone. The PNG is written here from the
    symbol's public ``matrix``: segno's own PNG writer spends most of its time in Python per
    pixel, this one builds each module row once and lets zlib do the rest."""
    return png_from_matrix(_qr(payload).matrix, scale=scale, border=border)


@functools.lru_cache(maxsize=8)
def _scaled_bits(scale: int) -> dict[bytes, str]:
    """Up to 8 modules (bytes of 0/1) → their pixels as greyscale bits (1 = white), ``scale`` each."""
    from itertools import product

    return {bytes(mods): "".join("0" * scale if m else "1" * scale for m in mods)
            for n in range(1, 9) for mods in product((0, 1), repeat=n)}


def png_from_matrix(matrix: Sequence[Sequence[int]], *, scale: int, border: int) -> bytes:
    """A 1-bit greyscale PNG of a QR matrix (1 = dark module), each module ``scale`` pixels.
    A row's pixels are looked up 8 modules at a time (not one by one), then packed as one integer."""
    import struct
    import zlib

    size = len(matrix) + 2 * border
    width = size * scale
    pad = (-width) % 8
    table = _scaled_bits(scale)
    light = "1" * scale

    def packed(bits: str) -> bytes:
        bits += "1" * pad
        return b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")  # filter type 0 (None)

    quiet = packed(light * size) * scale
    edge = light * border
    rows = [quiet * border]
    for row in matrix:
        mods = bytes(row)
        bits = "".join([table[mods[i:i + 8]] for i in range(0, len(mods), 8)])
        rows.append(packed(edge + bits + edge) * scale)
    rows.append(quiet * border)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, width, 1, 0, 0, 0, 0)
    # level 6: the same size here as 9 (long runs of white), a little faster
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) \
        + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=512)
def svg(payload: str, *, scale: int = 6) -> bytes:
    """The payload as an SVG QR code."""
    import io

    buf = io.BytesIO()
    _qr(payload).save(buf, kind="svg", scale=scale, border=4, xmldecl=False, title="VietQR")
    return buf.getvalue()


def purpose_text(reference: str) -> str:
    """Field 62.08: what the patient's banking app shows as the transfer note (ASCII, ≤ 25)."""
    return f"TT {reference}"[:MAX_PURPOSE]


__all__ = ["REFERENCE_LEN", "REFERENCE_PREFIX", "VietQr", "VietQrError", "build", "check_char", "crc16_ccitt_false",
           "crc_hex", "fold", "normalize_reference", "parse", "png", "purpose_text", "reference_candidates",
           "reference_code", "svg"]
