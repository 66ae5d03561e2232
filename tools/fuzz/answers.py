"""Schemathesis extension (``SCHEMATHESIS_HOOKS``) that judges every answer of a ``schemathesis run`` as it is
recorded: an error answer (4xx/5xx) must be a FHIR OperationOutcome under /fhir and RFC 9457 problem JSON
elsewhere. Each bad answer is appended as one JSON string line to the file named by ``SEN_FUZZ_BAD_ANSWERS``
(``METHOD path [body '...'] -> status content-type 'text'``); nothing is written when all are good.

It reads the interactions the run records for its reports (the same ones a HAR report holds: every call of every
scenario, sanitized alike), from the runner's own ``ScenarioFinished`` events, so the judgement needs no HAR
written and parsed again. Loaded by :func:`tools.fuzz.api_fuzz.fuzz`; standalone (no Sen imports): schemathesis
loads it from its path.
"""

from __future__ import annotations

import json
import os

from schemathesis import cli
from schemathesis.core.output.sanitization import sanitize_url
from schemathesis.core.transport import response_content_type
from schemathesis.engine import events

OUTPUT_ENV = "SEN_FUZZ_BAD_ANSWERS"
PROBLEM_TYPES = ("application/problem+json",)
FHIR_TYPES = ("application/fhir+json", "application/json")


def bad_answer(method: str, url: str, status: int, ctype: str, text: str | None, sent: str | None) -> str | None:
    """How an answer reads when it is a bad error answer (5xx, or a 4xx of the wrong shape); ``None`` otherwise."""
    if status < 400:
        return None
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url
    if path.startswith("/fhir"):
        ok = ctype.split(";")[0] in FHIR_TYPES and '"OperationOutcome"' in (text or "")
    else:
        ok = ctype.split(";")[0] in PROBLEM_TYPES
    if ok and status < 500:
        return None
    body = f" body {sent[:300]!r}" if sent else ""
    return f"{method} {path[:300]}{body} -> {status} {ctype} {(text or '')[:200]!r}"


@cli.handler()
class BadAnswers(cli.EventHandler):
    """Appends each bad answer of each finished scenario to ``$SEN_FUZZ_BAD_ANSWERS`` (a no-op without it)."""

    def __init__(self, *args, **params) -> None:
        self.path = os.environ.get(OUTPUT_ENV)

    def handle_event(self, ctx, event) -> None:
        if not self.path or not isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            return
        sanitization = ctx.config.output.sanitization
        found = []
        for interaction in event.recorder.interactions.values():
            response = interaction.response
            if response is None or response.status_code < 400:
                continue
            request = interaction.request
            url = sanitize_url(request.uri, config=sanitization) if sanitization.enabled else request.uri
            bad = bad_answer(
                request.method.upper(), url, response.status_code, response_content_type(response) or "",
                response.text_lossy() if response.content is not None else None,
                request.body.decode("utf-8", "replace") if request.body is not None else None)
            if bad is not None:
                found.append(bad)
        if found:
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(line) + "\n" for line in found)
