#!/usr/bin/env bash
# A private Docker engine for Outpost's tests and demos (DESIGN.md §8), plus the local test images.
#
# Usage:
#   eval "$(bash scripts/docker-engine.sh)"     # start (idempotent), build images, export DOCKER_HOST
#   bash scripts/docker-engine.sh start         # same as no argument
#   bash scripts/docker-engine.sh status        # exit 0 and print the export line when the engine answers
#   bash scripts/docker-engine.sh images        # (re)build missing or outdated test images only
#   bash scripts/docker-engine.sh stop [--purge]  # stop the engine; --purge also deletes its state
#
# The engine is Debian's docker.io dockerd with --storage-driver=vfs --bridge=none --iptables=false,
# its own data root, exec root and socket, started as root. Containers get only a loopback
# interface; healthchecks run inside the container, so they work. Nothing is pulled from a network:
# the images below are made locally with `docker import` from Debian's busybox-static.
#
# Images (all labelled outpost.test.recipe=<RECIPE>; rebuilt when that label is out of date):
#   outpost-test/busybox:1  /bin/busybox with every applet linked in /bin, /etc/passwd, /tmp.
#                           CMD ["sh"]. For one-off commands and crash tests.
#   outpost-test/web:1      busybox httpd on $PORT (default 8080) serving /www: /www/health ("ok"),
#                           /www/version ("1"), /www/index.html. PID 1 is a shell that exits 0 on
#                           SIGTERM/SIGINT, so `docker stop` is immediate (a bare httpd as PID 1
#                           ignores SIGTERM and every stop would wait for the kill timeout).
#                           HEALTHCHECK every 1 s: wget -q -O- http://127.0.0.1:$PORT/health (3 retries).
#   outpost-test/web:2      the same with /www/version "2" and different page content, so its layer,
#                           image id and registry digest differ from web:1 (an update to roll out).
#   outpost-test/broken:1   the same server and HEALTHCHECK, but /www/health is missing (404): the
#                           container keeps running and becomes unhealthy (rollback tests).
#
# Environment:
#   OUTPOST_DOCKER_STATE   state dir (default <repo>/.tmp/docker): data root, logs, pid file
#   OUTPOST_DOCKER_RUN     dir for the socket and exec root (default: the state dir when its path is
#                          short, else /tmp/outpost-docker-<hash>; unix socket paths max ~107 bytes)
#   OUTPOST_DOCKER_WAIT    seconds to wait for the engine to answer (default 60)
#   OUTPOST_DOCKER_SKIP_IMAGES=1   start the engine without building the images
#
# stdout carries only `export DOCKER_HOST=unix://...`; progress and errors go to stderr.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECIPE=2
IMAGES=(outpost-test/busybox:1 outpost-test/web:1 outpost-test/web:2 outpost-test/broken:1)

STATE="${OUTPOST_DOCKER_STATE:-$OUTPOST_ROOT/.tmp/docker}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
RUN="${OUTPOST_DOCKER_RUN:-$(short_dir "$STATE" docker)}"
SOCK="$RUN/docker.sock"
HOST="unix://$SOCK"
PIDFILE="$STATE/dockerd.pid"
LOGFILE="$STATE/dockerd.log"
WAIT="${OUTPOST_DOCKER_WAIT:-60}"

dk() { docker -H "$HOST" "$@"; }
answering() { dk info >/dev/null 2>&1; }

lock() {
  exec 9>"$STATE/.lock"
  flock -w 300 9 || die "could not lock $STATE/.lock within 300 s"
}

start_engine() {
  if answering; then
    log "engine already answering on $HOST"
    return 0
  fi
  if pid_alive "$PIDFILE"; then
    log "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting up to ${WAIT}s"
    if wait_until "$WAIT" answering; then return 0; fi
    stop_pidfile "$PIDFILE" dockerd 20
  fi
  [ "$(id -u)" -eq 0 ] || die "the private Docker engine needs root (dockerd); run as root"
  mkdir -p "$RUN" "$STATE/data"
  rm -f "$SOCK"
  local ns t0
  ns="outpost-$(printf '%s' "$STATE" | sha256sum | cut -c1-8)"
  t0=$(now_ms)
  log "starting dockerd: data $STATE/data, socket $SOCK (log: $LOGFILE)"
  # setsid + no inherited stdio: the daemon must not hold the caller's terminal, CI's pipes or our lock.
  setsid dockerd \
    --storage-driver=vfs --bridge=none --iptables=false --ip-masq=false \
    --data-root "$STATE/data" --exec-root "$RUN/exec" --pidfile "$PIDFILE" \
    -H "$HOST" --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
    --log-level warn </dev/null >>"$LOGFILE" 2>&1 9>&- &
  if ! wait_until "$WAIT" answering; then
    tail -n 30 "$LOGFILE" >&2 || true
    die "dockerd did not answer on $HOST within ${WAIT}s (see $LOGFILE)"
  fi
  log "engine up in $(($(now_ms) - t0)) ms"
}

image_current() {
  [ "$(dk image inspect -f '{{ index .Config.Labels "outpost.test.recipe" }}' "$1" 2>/dev/null)" = "$RECIPE" ]
}

# make_rootfs DIR — a minimal busybox root file system.
make_rootfs() {
  local root="$1" bb a
  bb="$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n 1)"
  [ -x "$bb" ] || die "busybox-static's /bin/busybox not found"
  mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/www"
  chmod 1777 "$root/tmp"
  cp "$bb" "$root/bin/busybox"
  for a in $("$root/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf 'hosts: files\n' >"$root/etc/nsswitch.conf"
}

# import_image TAG ROOTFS CHANGE... — docker import of a reproducible tarball of ROOTFS.
import_image() {
  local tag="$1" root="$2"
  shift 2
  local changes=(-c "ENV PATH=/bin" -c "LABEL outpost.test.recipe=$RECIPE")
  local c
  for c in "$@"; do changes+=(-c "$c"); done
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf - . |
    dk import "${changes[@]}" - "$tag" >/dev/null
  log "built $tag"
}

web_image() {
  local tag="$1" root="$2" version="$3" health="$4"
  rm -rf "$root"
  make_rootfs "$root"
  printf '%s\n' "$version" >"$root/www/version"
  printf '<html><body><h1>outpost-test web %s</h1></body></html>\n' "$version" >"$root/www/index.html"
  [ "$health" = yes ] && printf 'ok\n' >"$root/www/health"
  # shellcheck disable=SC2016 # ${PORT} is expanded in the container, not here
  import_image "$tag" "$root" \
    "ENV PORT=8080" "EXPOSE 8080" "LABEL outpost.test.version=$version" \
    'CMD ["/bin/sh", "-c", "trap \"exit 0\" TERM INT; httpd -f -p \"${PORT}\" -h /www & wait"]' \
    'HEALTHCHECK --interval=1s --timeout=3s --retries=3 CMD wget -q -O- "http://127.0.0.1:${PORT}/health" || exit 1'
}

build_images() {
  local missing=() img
  for img in "${IMAGES[@]}"; do
    image_current "$img" || missing+=("$img")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "test images present: ${IMAGES[*]}"
    return 0
  fi
  local t0 build
  t0=$(now_ms)
  build="$STATE/build"
  rm -rf "$build"
  mkdir -p "$build"
  for img in "${missing[@]}"; do
    case "$img" in
    outpost-test/busybox:1)
      make_rootfs "$build/busybox"
      import_image "$img" "$build/busybox" 'CMD ["sh"]'
      ;;
    outpost-test/web:1) web_image "$img" "$build/web1" 1 yes ;;
    outpost-test/web:2) web_image "$img" "$build/web2" 2 yes ;;
    outpost-test/broken:1) web_image "$img" "$build/broken1" broken no ;;
    *) die "no recipe for $img" ;;
    esac
  done
  rm -rf "$build"
  # Drop earlier builds of the test images that no tag and no container uses any more.
  dk image prune -f --filter "label=outpost.test.recipe" >/dev/null 2>&1 || true
  log "images built in $(($(now_ms) - t0)) ms"
}

stop_engine() {
  if answering; then
    local ids
    ids="$(dk ps -q)"
    if [ -n "$ids" ]; then
      log "stopping running containers"
      # shellcheck disable=SC2086
      dk stop -t 5 $ids >/dev/null || true
    fi
  fi
  stop_pidfile "$PIDFILE" dockerd 30
  rm -f "$SOCK"
}

purge_state() {
  # Unmount anything dockerd left mounted below the state dir before deleting it.
  local m
  # shellcheck disable=SC2013 # mount points under our dirs have no spaces
  for m in $(awk -v s="$STATE/" -v r="$RUN/" 'index($2, s) == 1 || index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$STATE"
  [ "$RUN" != "$STATE" ] && rm -rf "$RUN"
  log "purged $STATE"
}

cmd="${1:-start}"
case "$cmd" in
start)
  ensure_pkgs docker.io busybox-static
  lock
  start_engine
  [ "${OUTPOST_DOCKER_SKIP_IMAGES:-0}" = 1 ] || build_images
  printf 'export DOCKER_HOST=%s\n' "$HOST"
  ;;
images)
  lock
  answering || die "engine not running on $HOST; run: bash scripts/docker-engine.sh start"
  build_images
  ;;
status)
  if answering; then
    printf 'export DOCKER_HOST=%s\n' "$HOST"
  else
    log "engine not answering on $HOST"
    exit 1
  fi
  ;;
stop)
  lock
  stop_engine
  [ "${2:-}" = --purge ] && purge_state
  exit 0
  ;;
*) die "unknown command '$cmd' (start | images | status | stop [--purge])" ;;
esac
