#!/usr/bin/env bash
# Builds Jaeger v2 (an OpenTelemetry collector with trace storage and a query API) from the
# Go module proxy, once per version, into $P2P_CACHE_DIR/bin, and prints its path: the real
# collector the span export is tested against (issue 28, ADR 0027).
#   export P2P_JAEGER="$(deploy/local/jaeger.sh)"
# Takes about 5 minutes and 1.5 GB of modules the first time on 2 cores.
set -euo pipefail
JAEGER_VERSION=v1.75.0
cache="${P2P_CACHE_DIR:-$HOME/.cache/p2p-pipeline}"
bin="$cache/bin"
mkdir -p "$bin"
target="$bin/jaeger-$JAEGER_VERSION"
if ! [ -x "$target" ]; then
  command -v go >/dev/null 2>&1 || { echo "jaeger.sh: go is not installed" >&2; exit 1; }
  echo "jaeger.sh: building Jaeger $JAEGER_VERSION" >&2
  # A module of its own: Jaeger's go.mod replaces modules, which `go install pkg@version`
  # refuses; as a tool of a module it builds.
  work="$cache/jaeger-build"
  rm -rf "$work"
  mkdir -p "$work"
  (
    cd "$work"
    go mod init p2p-jaeger-build >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2
    go build -o "$target.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
  )
  mv "$target.tmp" "$target"
fi
echo "$target"
