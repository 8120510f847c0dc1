# Helpers shared by kafka.sh and registry.sh (sourced, not run).

# need TOOL WHY: fail with a message naming what is missing and what it is for.
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "$(basename "$0"): $1 is required ($2) but not on PATH" >&2; exit 2; }
}

# stop_pid_file FILE: stop the process whose pid FILE holds (TERM, then KILL after 30 s).
stop_pid_file() {
  [ -f "$1" ] || return 0
  local pid
  pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
