"""Sen teleconsult service:
consult requests and scheduling: ServiceRequest, Task, Schedule, Slot, Appointment, Communication.
"""
