"""Sen teleconsult service:
consult requests and scheduling: ServiceRequest, Task, Schedule, Slot, Appointment, Communication.
"""

import sen_shared  # noqa: F401,E402 - first: it silences a warning connexion prints at import
