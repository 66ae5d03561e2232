"""The bus's one exception family: everything it raises derives from :class:`BusError`."""

from __future__ import annotations

from ..errors import SenError


class BusError(SenError):
    """Something about publishing or consuming an event went wrong."""

    status = 503
    title = "Event Bus Error"


class Unroutable(BusError):
    """The broker returned a mandatory message: no queue is bound to its routing key."""


class PublishNacked(BusError):
    """The broker refused responsibility for a message (basic.nack)."""


class BusUnavailable(BusError):
    """The broker could not be reached within the retry policy."""


class ConfirmTimeout(BusUnavailable):
    """The broker did not confirm a published message in time: whether it has it is unknown, so it
    is published again later (consumers deduplicate), as after a lost connection."""


class InvalidEvent(BusError):
    """An event does not match its JSON Schema, or its type is not in the catalog."""

    status = 422
    title = "Invalid Event"


class UndecodableMessage(BusError):
    """A message body is not a CloudEvent in structured JSON mode."""

    status = 415
    title = "Undecodable Message"


class CatalogError(BusError):
    """The event catalog is inconsistent (a missing schema, an unknown consumer...)."""

    status = 500
    title = "Event Catalog Error"
