"""The teleconsult service's own rules: which FHIR resource types it holds."""

from __future__ import annotations

# Consult requests (ServiceRequest + Task + Communication) and scheduling (Schedule, Slot,
# Appointment, AppointmentResponse). Patients, practitioners and documents live in the EHR:
# resources here refer to them by reference. AuditEvent: the trail of this service's reads and writes.
RESOURCE_TYPES: tuple[str, ...] = (
    "ServiceRequest", "Task", "Communication", "Schedule", "Slot", "Appointment", "AppointmentResponse",
    "AuditEvent",
)
