"""Payment references (bill references): the code a VietQR, a receipt and a transfer note carry, one
mechanism for billing (which makes the codes and reads transfer notes) and the portal (whose cashier
types one into a search).

:func:`reference_code`: ``HD`` + 8 characters of Crockford's base 32 derived from the invoice id + 1
check character (the Luhn mod N algorithm over the same 32 symbols), 11 upper-case characters in all.
Banks upper-case, strip spaces and punctuation, cut notes, or add their own text; people type ``o``
for ``0``: :func:`reference_candidates` folds all that and accepts a code only if its check character
is right, so a mangled note still finds its invoice and a mistyped one finds none.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

REFERENCE_PREFIX = "HD"
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
BODY_LEN = 8
REFERENCE_LEN = len(REFERENCE_PREFIX) + BODY_LEN + 1
_LOOK_ALIKES = str.maketrans("OIL", "011")  # Crockford's: O reads 0, I and L read 1


def check_char(body: str) -> str:
    """The Luhn mod 32 check character of ``body`` (symbols of Crockford's base 32)."""
    factor, total = 2, 0
    for ch in reversed(body):
        addend = factor * _VALUE[ch]
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return ALPHABET[(32 - total % 32) % 32]


def is_valid(code: str) -> bool:
    """``code`` is a reference as billing writes them: ``HD``, 9 symbols, the last its check symbol."""
    if len(code) != REFERENCE_LEN or not code.startswith(REFERENCE_PREFIX):
        return False
    body = code[len(REFERENCE_PREFIX):]
    if any(c not in _VALUE for c in body):
        return False
    return check_char(body[:-1]) == body[-1]


def reference_code(invoice_id: str) -> str:
    """The invoice's bill reference: ``HD`` + 8 symbols derived from its id + a check symbol.
    Deterministic (a redelivered event or a retried issue gives the same code)."""
    digest = int.from_bytes(hashlib.sha256(f"sen-invoice:{invoice_id}".encode()).digest()[:8], "big")
    body = "".join(ALPHABET[(digest >> (5 * i)) & 31] for i in range(BODY_LEN))
    return REFERENCE_PREFIX + body + check_char(body)


def fold(text: str) -> str:
    """Upper case, diacritics and đ folded, only letters and digits kept."""
    folded = unicodedata.normalize("NFKD", (text or "").replace("đ", "d").replace("Đ", "D"))
    return re.sub(r"[^A-Z0-9]", "", "".join(c for c in folded if not unicodedata.combining(c)).upper())


def reference_candidates(text: str) -> list[str]:
    """Every bill reference a transfer note may carry, in the note's order, each once.

    The note is folded (:func:`fold`: case, spaces, punctuation, diacritics gone); Crockford's
    look-alikes are read as what they stand for (O → 0, I and L → 1) in a code's body; every
    11-character window starting ``HD`` whose check symbol is right is a candidate. A wrong
    check symbol (a typo) gives none. Folding glues words together, so a note like
    ``HD HD0001234563`` reads ``HDHD0001234563``, and the window at the first ``HD`` has a
    right check symbol for about 1 code in 30: which candidate is an invoice is for the
    caller to find out (billing's ``invoice_port.find_by_note`` asks in the note's order, until one is).
    """
    flat = fold(text)
    found: list[str] = []
    for i in range(len(flat) - REFERENCE_LEN + 1):
        if flat[i:i + 2] != REFERENCE_PREFIX:
            continue
        code = REFERENCE_PREFIX + flat[i + 2:i + REFERENCE_LEN].translate(_LOOK_ALIKES)
        if is_valid(code) and code not in found:
            found.append(code)
    return found


def normalize_reference(text: str) -> str | None:
    """The first bill reference candidate of a transfer note (:func:`reference_candidates`), or
    None. Only for a note known to carry one code; matching a payment uses every candidate."""
    found = reference_candidates(text)
    return found[0] if found else None


def typed_reference(text: str) -> str | None:
    """The reference a person typed (``hd 0p2b-6znpm``: case, spaces, dashes, diacritics and look-alike
    letters do not matter), read as a transfer note's; None when the text is no reference or a
    reference and more (a note names one, a search box or an invoice field is one)."""
    return normalize_reference(text) if len(fold(text)) == REFERENCE_LEN else None


__all__ = ["ALPHABET", "BODY_LEN", "REFERENCE_LEN", "REFERENCE_PREFIX", "check_char", "fold", "is_valid",
           "normalize_reference", "reference_candidates", "reference_code", "typed_reference"]
