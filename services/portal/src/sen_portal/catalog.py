"""The portal's message catalog, made one way: ``python -m sen_portal.catalog`` (``make translations``).

The English text is the message id. The step extracts every message the pages and the code pass through gettext
(``babel.cfg``: the Python files and the templates; the marks :data:`KEYWORDS` besides gettext's own) into
``translations/messages.pot``, updates ``vi/LC_MESSAGES/messages.po`` from it (a message no longer extracted is
dropped, none is guessed from a similar one: no fuzzy entries), then compiles the ``.mo`` the portal reads. Translate
what the update added (its ``msgstr`` empty) and run it again: ``services/portal/tests/test_catalog.py`` fails while a
message is untranslated, fuzzy, missing from the ``.po``, or the ``.mo`` is not the ``.po`` compiled.

pybabel is Babel's own command (the library Flask-Babel reads the catalog with); this module only holds its
arguments, so the tests extract and compile exactly as the step does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.frontend import CommandLineInterface

ROOT = Path(__file__).resolve().parent  # src/sen_portal
SERVICE = ROOT.parents[1]  # services/portal: babel.cfg's paths are relative to it
TRANSLATIONS = ROOT / "translations"
TEMPLATE = TRANSLATIONS / "messages.pot"
LANGUAGES = ("vi",)
# the portal's marks of a message besides gettext, ngettext (pybabel's own): forms' lazy texts (``_l``,
# ``lazy_gettext``), a refusal's fixed sentence (``refusals._say``), a WTForms plural message (``forms._plural``)
KEYWORDS = ("_l", "lazy_gettext", "_say", "_plural:1,2")


def _pybabel(*args: str) -> None:
    code = CommandLineInterface().run(["pybabel", "-q", *args])
    if code:
        raise SystemExit(f"pybabel {args[0]} failed ({code})")


def extract(output: Path = TEMPLATE) -> Path:
    """Every message of the pages and the code, into ``output`` (a ``.pot``)."""
    keywords = [arg for k in KEYWORDS for arg in ("-k", k)]
    _pybabel("extract", "-F", str(SERVICE / "babel.cfg"), *keywords, "--no-location", "--sort-output",
             "-o", str(output), str(ROOT / "web"))
    return output


def po_file(lang: str = "vi", directory: Path = TRANSLATIONS) -> Path:
    return directory / lang / "LC_MESSAGES" / "messages.po"


def update(template: Path = TEMPLATE) -> None:
    """Each language's ``.po`` from ``template``: new messages added untranslated, the ones gone dropped."""
    _pybabel("update", "--no-fuzzy-matching", "--ignore-obsolete", "-i", str(template), "-d", str(TRANSLATIONS))


def compile_mo(directory: Path = TRANSLATIONS) -> None:
    """Each language's ``.mo`` from its ``.po`` under ``directory``."""
    _pybabel("compile", "-d", str(directory))


def main(argv: list[str] | None = None) -> int:
    del argv
    update(extract())
    compile_mo()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
