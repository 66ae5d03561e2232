"""The FHIR endpoints of the ehr service: the shared handlers (``sen_shared.fhir.api``), served
under this package so their operationIds (``fhir.read`` in ``specs/common/fhir.yaml``) resolve here."""

from sen_shared.fhir.api import *  # noqa: F403 - the shared handlers are this module's operations
from sen_shared.fhir.api import __all__  # noqa: F401
