"""String normalization for search: accent- and case-insensitive, Vietnamese done right."""

from __future__ import annotations

import re
import unicodedata

MAX_PREFIX = 20
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize(value: str) -> str:
    """NFKD, drop combining marks, ``đ/Đ`` → ``d``, casefold, collapse whitespace.

    >>> normalize("Nguyễn Thị Đặng")
    'nguyen thi dang'
    """
    value = value.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACE.sub(" ", stripped.casefold()).strip()


def words(normalized: str) -> list[str]:
    return _WORD.findall(normalized)


def prefix_tokens(normalized: str, limit: int = MAX_PREFIX) -> set[str]:
    """All prefixes (1..limit chars) of every word of an already normalized string."""
    out: set[str] = set()
    for word in words(normalized):
        for i in range(1, min(len(word), limit) + 1):
            out.add(word[:i])
    return out


def query_tokens(normalized: str, limit: int = MAX_PREFIX) -> list[str]:
    """The tokens a query must find: each word, truncated to the stored prefix limit."""
    return sorted({w[:limit] for w in words(normalized)})
