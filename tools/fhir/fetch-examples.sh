#!/usr/bin/env bash
# Fetch the official FHIR R4 example package (all SearchParameter definitions
# plus the example resources) through npm and unpack it into DEST.
# Usage: tools/fhir/fetch-examples.sh [DEST]   (default .sen/fhir/hl7.fhir.r4.examples)
# Idempotent: does nothing when DEST/package already exists.
set -euo pipefail

PKG="hl7.fhir.r4.examples@4.0.1"
DEST="${1:-.sen/fhir/hl7.fhir.r4.examples}"

if [ -d "$DEST/package" ]; then
  echo "fetch-examples: $DEST/package already present"
  exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch-examples: npm is required" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tarball="$(ls "$tmp"/*.tgz | head -n 1)"
mkdir -p "$DEST.partial"
tar -xzf "$tarball" -C "$DEST.partial"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$DEST.partial" "$DEST"
echo "fetch-examples: unpacked $PKG into $DEST"
