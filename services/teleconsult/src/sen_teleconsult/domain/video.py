"""The video room of a booked consult (Jitsi Meet).

A room name is ``sen`` plus 160 random bits in lowercase hex (Jitsi lowercases room names, so
mixed-case randomness would lose bits): nothing in it comes from the patient, the clinic or
the doctor, and it cannot be guessed. The room URL is ``<Jitsi base URL>/<room>``.

With a Jitsi app secret configured (a Jitsi deployment with token authentication,
``prosody`` ``app_id``/``app_secret``), each join link carries a JWT signed with HS256 (PyJWT),
as Jitsi's token moderation expects: ``aud`` ``jitsi``, ``iss`` the app id, ``sub`` the Jitsi
domain, ``room`` the room name, ``nbf`` shortly before the slot, ``exp`` after the slot ends, and
``context.user`` a display name that names the role, never the patient. The doctor's token is
a moderator's. Without a secret the links are the bare room URL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import jwt

ROOM_PREFIX = "sen"
ROOM_RANDOM_BYTES = 20  # 160 bits


@dataclass(frozen=True)
class VideoConfig:
    base_url: str = "https://meet.jit.si"
    app_id: str = "sen"
    app_secret: str = ""
    early_minutes: int = 15  # a token is valid from this long before the slot
    grace_minutes: int = 30  # ... until this long after it


@dataclass(frozen=True)
class Room:
    name: str
    url: str
    clinic_url: str
    doctor_url: str
    expires: datetime | None  # when the tokens expire (None: no tokens)


def new_room_name() -> str:
    return ROOM_PREFIX + secrets.token_hex(ROOM_RANDOM_BYTES)


def room_token(cfg: VideoConfig, room: str, *, display: str, moderator: bool, start: datetime,
               end: datetime) -> str:
    sub = urlsplit(cfg.base_url).hostname or "*"
    claims = {
        "aud": "jitsi", "iss": cfg.app_id, "sub": sub, "room": room,
        "nbf": int((start - timedelta(minutes=cfg.early_minutes)).timestamp()),
        "exp": int((end + timedelta(minutes=cfg.grace_minutes)).timestamp()),
        "context": {"user": {"name": display, "moderator": moderator}},
    }
    return jwt.encode(claims, cfg.app_secret, algorithm="HS256")


def create_room(cfg: VideoConfig, start: datetime, end: datetime) -> Room:
    """A new room for a consult from ``start`` to ``end``, with join links for clinic and doctor."""
    name = new_room_name()
    url = f"{cfg.base_url.rstrip('/')}/{name}"
    if not cfg.app_secret:
        return Room(name, url, url, url, None)
    clinic = room_token(cfg, name, display="Tuyến cơ sở (clinic)", moderator=False, start=start, end=end)
    doctor = room_token(cfg, name, display="Bác sĩ tuyến tỉnh (specialist)", moderator=True, start=start, end=end)
    return Room(name, url, f"{url}?jwt={clinic}", f"{url}?jwt={doctor}",
                end + timedelta(minutes=cfg.grace_minutes))
