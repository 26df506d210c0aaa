#!/usr/bin/env bash
# A loopback image registry (Debian's docker-registry, distribution 2.x) for pull tests.
#
# Usage:
#   bash scripts/registry.sh start [--port P] [--dir D] [--push [IMAGE...]]
#       start (idempotent) on 127.0.0.1:P (default 5055) with its storage under D
#       (default <repo>/.tmp/registry); with --push, push the test images (default: all four
#       outpost-test images, see scripts/docker-engine.sh) as 127.0.0.1:P/<image>.
#       Prints `export OUTPOST_TEST_REGISTRY=127.0.0.1:P` on stdout.
#   bash scripts/registry.sh push [--dir D] [IMAGE...]   push into a running registry
#   bash scripts/registry.sh stop [--dir D] [--purge]    stop it; --purge deletes D
#
# After `docker pull 127.0.0.1:P/outpost-test/web:1` works against the private engine: dockerd
# treats 127.0.0.0/8 as an insecure (plain HTTP) registry by default, so no --insecure-registry
# flag is needed. Pushed images are untagged locally again, so that a pull really fetches.
# The engine used for pushing is $DOCKER_HOST, else the one scripts/docker-engine.sh manages.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEFAULT_IMAGES=(outpost-test/busybox:1 outpost-test/web:1 outpost-test/web:2 outpost-test/broken:1)

cmd="${1:-start}"
[ $# -gt 0 ] && shift
PORT="${OUTPOST_REGISTRY_PORT:-5055}"
DIR="${OUTPOST_REGISTRY_DIR:-$OUTPOST_ROOT/.tmp/registry}"
PUSH=0
PURGE=0
IMAGES=()
while [ $# -gt 0 ]; do
  case "$1" in
  --port) PORT="$2" && shift 2 ;;
  --dir) DIR="$2" && shift 2 ;;
  --push) PUSH=1 && shift ;;
  --purge) PURGE=1 && shift ;;
  -*) die "unknown option $1" ;;
  *) IMAGES+=("$1") && shift ;;
  esac
done
[ "${#IMAGES[@]}" -gt 0 ] || IMAGES=("${DEFAULT_IMAGES[@]}")
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PIDFILE="$DIR/registry.pid"
LOGFILE="$DIR/registry.log"
# A running registry's port wins over --port, so stop/push need only --dir.
if pid_alive "$PIDFILE" && [ -s "$DIR/port" ]; then PORT="$(cat "$DIR/port")"; fi
ADDR="127.0.0.1:$PORT"

# v2_ok — the registry answers GET /v2/ with 200 (bash's /dev/tcp: no curl needed).
v2_ok() (
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
  printf 'GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n' "$ADDR" >&3
  IFS= read -r -t 5 status <&3 || exit 1
  [[ "$status" == *" 200 "* ]]
)

start_registry() {
  if pid_alive "$PIDFILE" && v2_ok; then
    log "registry already answering on $ADDR"
    return 0
  fi
  stop_pidfile "$PIDFILE" docker-registry 10
  have docker-registry || ensure_pkgs docker-registry
  have docker-registry || die "docker-registry not found after installing it"
  mkdir -p "$DIR/data"
  cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $ADDR
EOF
  printf '%s\n' "$PORT" >"$DIR/port"
  setsid docker-registry serve "$DIR/config.yml" </dev/null >>"$LOGFILE" 2>&1 &
  printf '%s\n' "$!" >"$PIDFILE"
  if ! wait_until 30 v2_ok; then
    tail -n 20 "$LOGFILE" >&2 || true
    die "docker-registry did not answer on $ADDR within 30 s (see $LOGFILE)"
  fi
  log "registry up on $ADDR (storage $DIR/data)"
}

docker_host() {
  if [ -n "${DOCKER_HOST:-}" ]; then
    printf '%s\n' "$DOCKER_HOST"
  else
    bash "$OUTPOST_ROOT/scripts/docker-engine.sh" status | sed -n 's/^export DOCKER_HOST=//p'
  fi
}

push_images() {
  local host img
  host="$(docker_host)" || die "no Docker engine: run bash scripts/docker-engine.sh first"
  v2_ok || die "registry not answering on $ADDR"
  for img in "${IMAGES[@]}"; do
    docker -H "$host" image inspect "$img" >/dev/null 2>&1 || die "image $img not present on $host"
    docker -H "$host" tag "$img" "$ADDR/$img"
    docker -H "$host" push "$ADDR/$img" >/dev/null
    docker -H "$host" rmi "$ADDR/$img" >/dev/null
    log "pushed $ADDR/$img"
  done
}

case "$cmd" in
start)
  start_registry
  [ "$PUSH" -eq 1 ] && push_images
  printf 'export OUTPOST_TEST_REGISTRY=%s\n' "$ADDR"
  ;;
push) push_images ;;
stop)
  stop_pidfile "$PIDFILE" docker-registry 10
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$DIR"
    log "purged $DIR"
  fi
  ;;
*) die "unknown command '$cmd' (start | push | stop)" ;;
esac
