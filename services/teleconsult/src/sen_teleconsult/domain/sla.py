"""The consult's service level, no I/O: when a consult is late and whom a late one goes to.

Priority sets the due time at submission (``SEN_CONSULT_SLA_HOURS``; stat 1 h, asap 4 h,
urgent 24 h, routine 72 h by default). A consult still open after its due time is
breached: the worker's sweeper publishes ``teleconsult.consult.sla_breached`` once
and escalates it to the hub's on-duty lead, named per hub by ``SEN_ON_DUTY_LEADS``
(a setting, not a roster: the hub changes it when the lead changes; ``"*"`` for any hub).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .consults import OPEN_STATES


def is_breached(state: str, due: datetime, now: datetime) -> bool:
    return state in OPEN_STATES and now > due


def on_duty_lead(hub: str, leads: Mapping[str, str]) -> str | None:
    """The lead (``Practitioner/<id>``) of ``hub`` (``Organization/<id>``), or the default one."""
    hub_id = hub.split("/", 1)[-1]
    return leads.get(hub_id) or leads.get(hub) or leads.get("*")
