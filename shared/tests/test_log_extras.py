"""Every ``extra={...}`` of a log call in the services and the shared library names only keys a
LogRecord does not already have: ``logging`` refuses such a key with ``KeyError: "Attempt to
overwrite 'created' in LogRecord"``, so the call logs nothing but that error (the billing worker's
"price list loaded" did at every start, an ``exception`` handler then logging a false failure)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("shared/src/**/*.py")])
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
# what Logger.makeRecord refuses in extra: a record's own attributes, and the two the formatter sets
RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extra_keys(tree: ast.AST) -> list[tuple[int, str]]:
    keys = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS):
            continue
        for kw in node.keywords:
            if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                keys += [(k.lineno, k.value) for k in kw.value.keys
                         if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return keys


def test_the_scan_finds_the_log_calls_and_the_reserved_names():
    assert {"created", "name", "msg", "args", "module", "filename", "lineno", "levelname", "process",
            "thread", "message", "asctime"} <= RESERVED
    assert len(SOURCES) > 50
    found = _extra_keys(ast.parse('log.info("x", extra={"created": 1, "count": 2})\nd.get("a", extra={"name": 1})'))
    assert found == [(1, "created"), (1, "count")]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_log_extra_overwrites_a_log_record_attribute(path):
    clashes = [f"{path.relative_to(ROOT)}:{line}: {key!r}" for line, key in _extra_keys(ast.parse(path.read_text()))
               if key in RESERVED]
    assert not clashes, "extra keys a LogRecord already has: " + ", ".join(clashes)


def test_a_reserved_extra_key_is_refused_by_logging_itself():
    """What the scan guards against, and the billing worker's renamed key, logged for real."""
    log = logging.getLogger("sen.test.extras")
    with pytest.raises(KeyError, match="overwrite 'created'"):
        log.makeRecord(log.name, logging.INFO, __file__, 1, "price list loaded", (), None, extra={"created": 1})
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "price list loaded", (), None,
                            extra={"entries_created": 3})
    assert record.entries_created == 3
