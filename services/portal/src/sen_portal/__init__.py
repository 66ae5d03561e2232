"""Sen portal service:
the web pages for clinic staff, doctors, cashiers and the health department, and the reporting read model.
"""

import sen_shared  # noqa: F401,E402 - first: it silences a warning connexion prints at import
