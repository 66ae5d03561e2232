"""The FHIR endpoints of the teleconsult service: the shared handlers (``sen_shared.fhir.api``),
served under this package so their operationIds (``fhir.read`` in ``specs/common/fhir.yaml``)
resolve here. The state-changing ones honour ``Idempotency-Key`` (``sen_shared.idempotency_key``)."""

from sen_shared.fhir import api as _shared
from sen_shared.fhir.api import *  # noqa: F403 - the shared handlers are this module's operations
from sen_shared.fhir.api import __all__  # noqa: F401
from sen_shared.idempotency_key import idempotent

bundle = idempotent()(_shared.bundle)
create = idempotent()(_shared.create)
update = idempotent()(_shared.update)
conditional_update = idempotent()(_shared.conditional_update)
patch = idempotent()(_shared.patch)
delete = idempotent()(_shared.delete)
