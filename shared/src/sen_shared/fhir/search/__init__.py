"""FHIR R4 search: definitions, write-time extraction, parsing, MongoDB translation, execution.

Parse, then translate (Medplum's split): :func:`parse_search` turns a query into
a plain :class:`SearchRequest`; :func:`build_filter`/:func:`build_sort`/
:func:`page_filter` turn that into MongoDB terms without I/O; :func:`search`
runs it. :func:`index_fields` computes the ``sp_*`` keys stored with each
resource at write time.
"""

from .errors import SearchError, UnsupportedSearch
from .extract import index_fields
from .mongo import build_filter, build_sort, decode_cursor, encode_cursor, page_filter
from .parse import SearchRequest, parse_search

__all__ = [
    "SearchError", "UnsupportedSearch", "SearchRequest", "build_filter", "build_sort", "decode_cursor",
    "encode_cursor", "index_fields", "page_filter", "parse_search",
]
