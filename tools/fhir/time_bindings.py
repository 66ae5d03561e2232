#!/usr/bin/env python3
"""Cost of the required-binding check per write: ``bindings.check`` alone and the whole
``validate_resource`` (model + bindings), on official R4 examples. Prints µs per call.

Usage: tools/fhir/time_bindings.py [PACKAGE_DIR]  (default ``.sen/fhir/hl7.fhir.r4.examples/package``)
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

from sen_shared.fhir import bindings
from sen_shared.fhir.validate import validate_resource

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["Patient-example.json", "Patient-f001.json", "Observation-example.json",
            "Observation-blood-pressure.json", "Encounter-example.json"]


def main(argv: list[str]) -> int:
    pkg = Path(argv[1]) if len(argv) > 1 else ROOT / ".sen/fhir/hl7.fhir.r4.examples/package"
    bindings.check({"resourceType": "Patient"})  # load the table once
    print(f"{'example':38} {'bindings µs':>12} {'validate µs':>12}")
    for name in EXAMPLES:
        res = json.loads((pkg / name).read_text("utf-8"))
        n = 2000
        b = min(timeit.repeat(lambda r=res: bindings.check(r), number=n, repeat=5)) / n * 1e6
        v = min(timeit.repeat(lambda r=res: validate_resource(r), number=n // 10, repeat=3)) / (n // 10) * 1e6
        print(f"{name:38} {b:12.1f} {v:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
