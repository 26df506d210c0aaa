# shellcheck shell=bash
# Shared helpers for Outpost's developer and CI scripts. Source it, don't run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything a script prints for the user goes to stderr through log/section/die, so that stdout
# stays free for machine-readable output (`eval "$(scripts/docker-engine.sh)"`).

OUTPOST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OUTPOST_ROOT

log() { printf '%s\n' "[$(basename "$0")] $*" >&2; }
die() {
  printf '%s\n' "[$(basename "$0")] ERROR: $*" >&2
  exit 1
}
section() { printf '\n==> %s\n' "$*" >&2; }

# Seconds since the epoch with millisecond precision (for the timings the scripts print).
now_ms() { date +%s%3N; }

have() { command -v "$1" >/dev/null 2>&1; }

pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = 'install ok installed' ]
}

# ensure_pkgs PKG... — install the Debian packages that are missing, idempotently.
# Runs `apt-get update` at most once per process tree (OUTPOST_APT_UPDATED marks it done).
# Service start-up during installation is suppressed with a temporary policy-rc.d, so that
# installing docker.io or mosquitto never starts a system daemon on the default ports.
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  have apt-get || die "missing Debian packages (${missing[*]}) and no apt-get to install them"
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); run as root or: sudo apt-get install -y ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
  fi
  local rc=0
  if [ "${OUTPOST_APT_UPDATED:-0}" != 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || rc=$?
    export OUTPOST_APT_UPDATED=1
  fi
  if [ "$rc" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?
  fi
  [ "$created_policy" -eq 1 ] && rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get failed ($rc) installing: ${missing[*]}"
}

# wait_until SECONDS CMD... — run CMD every 0.2 s until it succeeds; fail after SECONDS.
wait_until() {
  local limit_ms=$(($1 * 1000)) start
  shift
  start=$(now_ms)
  until "$@" >/dev/null 2>&1; do
    [ $(($(now_ms) - start)) -ge "$limit_ms" ] && return 1
    sleep 0.2
  done
}

# pid_alive PIDFILE — true when the pid file names a running process.
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid="$(cat "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile PIDFILE NAME [SECONDS] — SIGTERM the process in PIDFILE, wait (bounded), then SIGKILL.
stop_pidfile() {
  local pidfile="$1" name="$2" secs="${3:-20}" pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$secs" bash -c "! kill -0 $pid"; then
    log "$name did not stop within ${secs}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 bash -c "! kill -0 $pid" || true
  fi
  rm -f "$pidfile"
}

# short_dir DIR TAG — DIR itself when unix socket paths under it stay well below the ~107-byte
# limit, otherwise a short directory under /tmp derived from DIR (stable across runs).
short_dir() {
  local dir="$1" tag="$2"
  if [ "${#dir}" -le 60 ]; then
    printf '%s\n' "$dir"
  else
    printf '/tmp/outpost-%s-%s\n' "$tag" "$(printf '%s' "$dir" | sha256sum | cut -c1-10)"
  fi
}
