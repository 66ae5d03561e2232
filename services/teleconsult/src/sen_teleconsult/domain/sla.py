"""The consult's service level, no I/O: when a consult is late and whom a late one goes to.

Priority sets the due time at submission (``SEN_CONSULT_SLA_HOURS``; stat 1 h, asap 4 h,
urgent 24 h, routine 72 h by default). A consult still open after its due time is
breached: the worker's sweeper publishes ``teleconsult.consult.sla_breached`` once
and escalates it to the hub's on-duty lead, named per hub by ``SEN_ON_DUTY_LEADS``
(a setting, not a roster: the hub changes it when the lead changes; ``"*"`` for any hub), who
is sent a message (:mod:`.lead_alerts`) at the address configured with the lead, else the
reminders' address book.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .consults import OPEN_STATES


def is_breached(state: str, due: datetime, now: datetime) -> bool:
    return state in OPEN_STATES and now > due


Lead = str | Mapping[str, str]  # "Practitioner/<id>", or {"lead": "Practitioner/<id>", "email": "..."}


def _entry(hub: str, leads: Mapping[str, Lead]) -> Lead | None:
    hub_id = hub.split("/", 1)[-1]
    return leads.get(hub_id) or leads.get(hub) or leads.get("*")


def on_duty_lead(hub: str, leads: Mapping[str, Lead]) -> str | None:
    """The lead (``Practitioner/<id>``) of ``hub`` (``Organization/<id>``), or the default one."""
    entry = _entry(hub, leads)
    return (entry.get("lead") or None) if isinstance(entry, Mapping) else entry


def on_duty_lead_email(hub: str, leads: Mapping[str, Lead]) -> str | None:
    """The e-mail address configured with the lead of ``hub`` (None: the address book's)."""
    entry = _entry(hub, leads)
    return (entry.get("email") or None) if isinstance(entry, Mapping) else None
