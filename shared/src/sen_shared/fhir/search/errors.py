"""The search engine's one exception family."""

from __future__ import annotations

from ..outcome import FhirError


class SearchError(FhirError):
    """A search the engine cannot run: unknown parameter, bad modifier or value, unsupported feature.

    ``location`` names the offending query parameter (it becomes the
    OperationOutcome issue's ``expression``).
    """

    def __init__(self, message: str, location: str | None = None, *, status: int = 400,
                 code: str | None = None) -> None:
        super().__init__(message, status=status, code=code or "invalid",
                         expression=[location] if location else None)
        self.message = message
        self.location = location


class UnsupportedSearch(SearchError):
    """A valid FHIR search feature that Sen does not implement."""

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(message, location, code="not-supported")
