"""JSON Patch (RFC 6902) of a stored resource, with the ``jsonpatch`` library."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from .outcome import FhirError


def apply_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    """``resource`` with ``operations`` applied (a new object); 400 for a bad patch, 422 when it fails."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise FhirError("a JSON Patch is an array of operation objects", status=400)
    try:
        patch = jsonpatch.JsonPatch(operations)
        result = patch.apply(copy.deepcopy(resource))
    except jsonpatch.JsonPatchTestFailed as err:
        raise FhirError(f"the patch's test failed: {err}", status=422, code="processing") from None
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, jsonpatch.JsonPatchConflict) as err:
        raise FhirError(f"the patch cannot be applied: {err}", status=422, code="processing") from None
    except (TypeError, ValueError, KeyError, IndexError) as err:
        raise FhirError(f"the patch is not valid: {err}", status=400) from None
    if not isinstance(result, dict):
        raise FhirError("the patch must leave a resource (a JSON object)", status=422)
    return result
