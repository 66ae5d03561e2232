"""What a portal process keeps in memory is forgotten by one call (sen_portal.caches.forget_all), which the
tests' portal makes: a cache filled while one test's app served is empty in the next test's app, whatever
the order the tests run in; and every module-level cache of the portal is registered for it."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sen_portal
from sen_portal import caches

from tests.support import portal_app

# caches of the installed code and files, the same in a new process: not registered (sen_portal.caches)
NOT_REGISTERED = {
    ("sen_portal.web", "_assets"),  # the static files' bytes, read again when their mtime or size changes
    ("sen_portal.web", "_static_paths"),  # a static file's name resolved to its path
    ("sen_portal.web", "_portal_forms"),  # the form classes of the code
    ("sen_portal.web.icd10", "_index"),  # the ICD-10 list shipped with the portal
    ("sen_portal.domain.report_facts", "iso_week"),  # a pure function of its argument
}


def _fill_every_cache() -> dict[str, Any]:
    """One entry in each of the portal's caches, as its module stores it; their contents by name."""
    from sen_portal.domain import reporting
    from sen_portal.web import backend, clinic, dashboard, directory, signouts, tokens

    directory._kept["Organization"] = (0.0, {"tyt-my-hiep": "Trạm Y tế xã Mỹ Hiệp"})
    clinic._reasons_kept["sr1"] = (0.0, {"reasonCode": [{"text": "Đau ngực"}]})
    clinic._file_names["d1"] = "phim-x-quang.jpg"
    dashboard._figures[("sen_portal",)] = (0.0, {"consults": 1})
    backend.answers.get(("doctor",), 60, lambda: {"resourceType": "Bundle"})
    backend._tokens[("doctor", "doctor")] = ("token", 0.0)
    signouts._signed_out.add("sid-out")
    signouts._seen_live["sid-live"] = 0.0
    signouts._swept["portal_signouts"] = 0.0
    tokens._kept["sid"] = ({"n": 1}, 0.0)
    reporting._marked[("sen_portal", "m1")] = None
    reporting.sealed_cache.put(SimpleNamespace(name="sen_portal"), "day/2026-12-06/consults", [{"n": 1}])
    return _contents()


def _contents() -> dict[str, Any]:
    from sen_portal.domain import reporting
    from sen_portal.web import backend, clinic, dashboard, directory, signouts, tokens

    return {"directory._kept": dict(directory._kept), "clinic._reasons_kept": dict(clinic._reasons_kept),
            "clinic._file_names": dict(clinic._file_names), "dashboard._figures": dict(dashboard._figures),
            "backend.answers": dict(backend.answers._kept), "backend._tokens": dict(backend._tokens),
            "signouts._signed_out": set(signouts._signed_out), "signouts._seen_live": dict(signouts._seen_live),
            "signouts._swept": dict(signouts._swept), "tokens._kept": dict(tokens._kept),
            "reporting._marked": dict(reporting._marked), "reporting.sealed_cache": dict(reporting.sealed_cache.rows)}


def test_what_one_portal_app_kept_is_forgotten_by_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    portal_app(tmp_path, monkeypatch)
    filled = _fill_every_cache()
    assert all(filled.values()), [name for name, content in filled.items() if not content]
    portal_app(tmp_path, monkeypatch)
    assert {name: content for name, content in _contents().items() if content} == {}


def _portal_modules() -> list[Any]:
    # asgi builds the app from the environment when imported (gunicorn's entry point): not a module to import here
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(sen_portal.__path__, "sen_portal.")
            if m.name != "sen_portal.asgi"]


def test_every_module_level_cache_of_the_portal_is_registered() -> None:
    """A dict, set or other clearable object, or a functools cache, kept at a module's level (not a constant:
    not an UPPER_CASE name) is a cache of the process: registered with sen_portal.caches, or one of
    :data:`NOT_REGISTERED` (what a new process would read the same)."""
    modules = _portal_modules()
    registered = {id(cache) for cache in caches._registered}
    unregistered = []
    for module in modules:
        for name, value in list(vars(module).items()):
            if name.isupper() or name.startswith("__") or isinstance(value, type) or module is caches:
                continue
            if type(value).__name__ in ("module", "LocalProxy"):  # flask's request, session, ...
                continue
            if callable(value) and getattr(value, "__module__", module.__name__) != module.__name__:
                continue  # a function imported from elsewhere (urllib's cached urlsplit)
            if hasattr(value, "cache_clear") or isinstance(value, (dict, set)) or (
                    hasattr(value, "clear") and not callable(value)):
                if id(value) not in registered and (module.__name__, name) not in NOT_REGISTERED:
                    unregistered.append(f"{module.__name__}.{name}")
    assert unregistered == []
