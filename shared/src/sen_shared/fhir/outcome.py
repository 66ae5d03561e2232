"""FHIR ``OperationOutcome``: how every FHIR API says what went wrong."""

from __future__ import annotations

from typing import Any

from ..errors import SenError

FHIR_JSON = "application/fhir+json"

_ISSUE_CODE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
               415: "not-supported", 422: "processing", 429: "throttled", 500: "exception",
               503: "transient"}


def issue_code(status: int) -> str:
    return _ISSUE_CODE.get(status, "processing" if status < 500 else "exception")


def outcome(detail: str, *, status: int = 400, code: str | None = None, severity: str = "error",
            expression: list[str] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code or issue_code(status), "diagnostics": detail}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirError(SenError):
    """A FHIR-level error: status, issue code and FHIRPath locations."""

    def __init__(self, detail: str, *, status: int = 400, code: str | None = None,
                 expression: list[str] | None = None, issues: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, status=status)
        self.code = code or issue_code(status)
        self.expression = expression
        self.issues = issues
        self.headers = headers or {}

    def to_outcome(self) -> dict[str, Any]:
        if self.issues:
            return {"resourceType": "OperationOutcome", "issue": self.issues}
        return outcome(self.detail, status=self.status, code=self.code, expression=self.expression)
