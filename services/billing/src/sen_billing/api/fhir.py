"""The FHIR endpoints of the billing service: the shared handlers (``sen_shared.fhir.api``),
served under this package so their operationIds (``fhir.read`` in ``specs/common/fhir.yaml``)
resolve here. The engine is :class:`sen_billing.fhir_server.BillingFhirServer`; the state-changing
interactions honour ``Idempotency-Key`` (``sen_shared.idempotency_key``)."""

from sen_shared.fhir import api as _shared
from sen_shared.fhir.api import *  # noqa: F403 - the shared handlers are this module's operations
from sen_shared.fhir.api import __all__  # noqa: F401
from sen_shared.idempotency_key import idempotent

create = idempotent()(_shared.create)
update = idempotent()(_shared.update)
conditional_update = idempotent()(_shared.conditional_update)
patch = idempotent()(_shared.patch)
delete = idempotent()(_shared.delete)
