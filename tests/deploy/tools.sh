#!/usr/bin/env bash
# Build (once) the tools the deployment tests need, and print the absolute path of one.
#
#   tests/deploy/tools.sh kustomize       kustomize v5.5.0, built from its Go module
#   tests/deploy/tools.sh composecheck    compose-go v2.16.2 loader (stands in for `docker compose config`)
#
# Binaries go to ${SEN_TOOLS_DIR:-$HOME/.local/share/sen/bin} and are reused while their
# version stamp matches. Only the Go module proxy is needed (no GitHub, no prebuilt binary):
# `go install pkg@version` would ask the proxy for version lists, which it refuses here, so
# the modules are fetched at exact versions and built with `go build`.
# Exit status 3 means "cannot be built on this machine" (no Go toolchain, no proxy).
set -euo pipefail

tool=${1:?usage: tools.sh kustomize|composecheck}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SEN_TOOLS_DIR:-$HOME/.local/share/sen/bin}
kustomize_version=v5.5.0
compose_go_version=v2.16.2

log() { printf 'tools.sh: %s\n' "$*" >&2; }
need_go() { command -v go >/dev/null 2>&1 || { log "no Go toolchain: cannot build $tool"; exit 3; }; }

fresh() {  # name stamp: the binary exists and was built from this stamp
  [ -x "$bin/$1" ] && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]
}

install_built() {  # name stamp tmpfile
  chmod 0755 "$3"; mv -f "$3" "$bin/$1"; printf '%s\n' "$2" > "$bin/$1.version"
}

mkdir -p "$bin"
case "$tool" in
  kustomize|composecheck)  # one build of a tool at a time: a caller that comes while another builds it waits, then
    exec 9>"$bin/.$tool.lock"  # finds it fresh (the suite starts both builds in the background at its start,
    flock 9 ;;                 # tests/conftest.py, and the deployment tests' fixtures ask for them later)
esac
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0

case "$tool" in
  kustomize)
    if ! fresh kustomize "$kustomize_version"; then
      need_go
      log "building kustomize $kustomize_version (once; about a minute)"
      dir=$(go mod download -json "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || { log "go mod download failed"; exit 3; }
      [ -n "$dir" ] || { log "go mod download gave no directory"; exit 3; }
      tmp=$(mktemp "$bin/.kustomize.XXXXXX")
      (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$tmp" .) || { rm -f "$tmp"; log "go build failed"; exit 3; }
      install_built kustomize "$kustomize_version" "$tmp"
    fi
    ;;
  composecheck)
    stamp="compose-go $compose_go_version $(cksum < "$here/composecheck/main.go" | cut -d' ' -f1)"
    if ! fresh composecheck "$stamp"; then
      need_go
      log "building composecheck (compose-go $compose_go_version; once)"
      work=$(mktemp -d)
      trap 'rm -rf "$work"' EXIT
      cp "$here/composecheck/main.go" "$work/"
      tmp=$(mktemp "$bin/.composecheck.XXXXXX")
      if ! (cd "$work" && go mod init sen.local/composecheck >/dev/null 2>&1 &&
            go get "github.com/compose-spec/compose-go/v2@$compose_go_version" >/dev/null 2>&1 &&
            go mod tidy >/dev/null 2>&1 &&
            go build -trimpath -ldflags "-s -w" -o "$tmp" .); then
        rm -f "$tmp"; log "building composecheck failed"; exit 3
      fi
      install_built composecheck "$stamp" "$tmp"
    fi
    ;;
  compose-schema)
    # the compose-spec JSON schema as compose-go ships it, read from the module cache
    need_go
    dir=$(cd "$(mktemp -d)" && go mod download -json "github.com/compose-spec/compose-go/v2@$compose_go_version" |
          sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || { log "go mod download failed"; exit 3; }
    [ -f "$dir/schema/compose-spec.json" ] || { log "compose-spec.json not in $dir"; exit 3; }
    printf '%s\n' "$dir/schema/compose-spec.json"
    exit 0
    ;;
  *) log "unknown tool $tool"; exit 2 ;;
esac
printf '%s\n' "$bin/$tool"
