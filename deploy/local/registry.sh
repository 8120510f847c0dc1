#!/usr/bin/env bash
# A real schema registry for development and tests: Apicurio Registry (Java 17, in-memory
# storage) from Maven Central, on 127.0.0.1. Its Confluent-compatible API is at
# http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7, which is what the pipeline talks to.
#
#   deploy/local/registry.sh start|stop|status|url
#
# Version: the issue asked for 3.1.x; the Maven Central available here serves 3.0.9 and 3.3.x,
# and 3.2.1+ needs Java 21, so 3.0.9 is the newest that runs on Java 17 (docs/adr/0003).
# Environment: P2P_CACHE_DIR (default ~/.cache/p2p-pipeline), REGISTRY_PORT (8081).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"

version="${APICURIO_VERSION:-3.0.9}"
cache="${P2P_CACHE_DIR:-$HOME/.cache/p2p-pipeline}"
home="$cache/apicurio-$version"
port="${REGISTRY_PORT:-8081}"
run="$cache/registry-$port"
url="http://127.0.0.1:$port/apis/ccompat/v7"


fetch() {
  [ -f "$home/.complete" ] && return 0
  need java "Java 17 runs the registry"
  need mvn "Maven fetches the registry from Maven Central"
  echo "registry.sh: fetching Apicurio Registry $version from Maven Central" >&2
  # Not transitive: the tarball is self-contained (and its parent POM is not needed to run it).
  rm -rf "$home" && mkdir -p "$home"
  mvn -q -B dependency:get -Dtransitive=false \
    -Dartifact="io.apicurio:apicurio-registry-app:$version:tar.gz:all" \
    -Ddest="$home/apicurio-registry-app.tar.gz" >&2
  tar -xzf "$home/apicurio-registry-app.tar.gz" -C "$home"
  rm -f "$home/apicurio-registry-app.tar.gz"
  touch "$home/.complete"
}

ready() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    if curl -sf "$url/subjects" >/dev/null 2>&1; then
      echo "schema registry at $url is up" >&2
      return 0
    fi
    sleep 0.5
  done
  return 1
}

start() {
  need curl "to check that the registry answers"
  if curl -sf "$url/subjects" >/dev/null 2>&1; then
    echo "schema registry at $url is up" >&2
    return 0
  fi
  fetch
  mkdir -p "$run"
  echo "registry.sh: starting Apicurio Registry $version on 127.0.0.1:$port" >&2
  # Started straight from this shell (no subshell around it): $! is then the registry's own
  # pid, so `stop` stops the registry, and no waiting shell keeps the caller's stdout open.
  cd "$run"
  setsid nohup java -Xmx384m \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
    -jar "$home/apicurio-registry-app-$version-runner.jar" \
    > "$run/registry.out" 2>&1 < /dev/null &
  echo $! > "$run/registry.pid"
  cd - > /dev/null
  if ! ready 90; then
    echo "registry.sh: registry did not come up; last lines of $run/registry.out:" >&2
    tail -n 30 "$run/registry.out" >&2 || true
    exit 1
  fi
}

stop() {
  stop_pid_file "$run/registry.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) curl -sf "$url/subjects" >/dev/null ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
