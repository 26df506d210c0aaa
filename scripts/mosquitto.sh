#!/usr/bin/env bash
# Mosquitto (Debian's mosquitto + mosquitto-clients), the independent MQTT 3.1.1 broker and clients
# that Outpost is tested against (DESIGN.md §2, §8).
#
# Usage:
#   bash scripts/mosquitto.sh check
#       install mosquitto and mosquitto-clients if missing; print the broker's version
#   bash scripts/mosquitto.sh start [--port P] [--dir D] [--conf FILE]
#       start a broker in the background (idempotent per D, default <repo>/.tmp/mosquitto).
#       Without --conf: a plain loopback listener on 127.0.0.1:P (default 1884), anonymous,
#       no persistence — for smoke tests and demos. With --conf FILE: FILE is used as it is
#       (it must declare its own listener on P; tests generate TLS configs themselves).
#       Prints `export OUTPOST_TEST_MQTT=mqtt://127.0.0.1:P` on stdout.
#   bash scripts/mosquitto.sh stop [--dir D]
#   bash scripts/mosquitto.sh smoke
#       start a plain broker on a spare port, publish and receive one QoS 1 message, stop.
#
# As root, mosquitto drops to the `mosquitto` user unless the config says otherwise; the generated
# config says `user root` so that it can read and write files in private temporary directories.
# (The test helper mosquitto() in test/helpers does the same for configs given as text.)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd="${1:-check}"
[ $# -gt 0 ] && shift
PORT="${OUTPOST_MQTT_PORT:-1884}"
DIR="${OUTPOST_MQTT_DIR:-$OUTPOST_ROOT/.tmp/mosquitto}"
CONF=""
while [ $# -gt 0 ]; do
  case "$1" in
  --port) PORT="$2" && shift 2 ;;
  --dir) DIR="$2" && shift 2 ;;
  --conf) CONF="$2" && shift 2 ;;
  *) die "unknown option $1" ;;
  esac
done

ensure_mosquitto() {
  have mosquitto || [ -x /usr/sbin/mosquitto ] || ensure_pkgs mosquitto
  have mosquitto_pub || ensure_pkgs mosquitto-clients
  # Debian puts the broker in /usr/sbin, which a non-login PATH may lack.
  case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
  have mosquitto || die "mosquitto not found after installing it"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_broker() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  local pidfile="$DIR/mosquitto.pid" logfile="$DIR/mosquitto.log" conf
  if pid_alive "$pidfile" && [ -s "$DIR/port" ] && port_open "$(cat "$DIR/port")"; then
    log "mosquitto already running on 127.0.0.1:$(cat "$DIR/port")"
    printf 'export OUTPOST_TEST_MQTT=mqtt://127.0.0.1:%s\n' "$(cat "$DIR/port")"
    return 0
  fi
  stop_pidfile "$pidfile" mosquitto 10
  if [ -n "$CONF" ]; then
    conf="$CONF"
  else
    conf="$DIR/mosquitto.conf"
    {
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT"
      [ "$(id -u)" -eq 0 ] && printf 'user root\n'
    } >"$conf"
  fi
  printf '%s\n' "$PORT" >"$DIR/port"
  setsid mosquitto -c "$conf" </dev/null >>"$logfile" 2>&1 &
  printf '%s\n' "$!" >"$pidfile"
  if ! wait_until 15 port_open "$PORT"; then
    tail -n 20 "$logfile" >&2 || true
    die "mosquitto did not listen on 127.0.0.1:$PORT within 15 s (see $logfile)"
  fi
  log "mosquitto up on 127.0.0.1:$PORT (config $conf)"
  printf 'export OUTPOST_TEST_MQTT=mqtt://127.0.0.1:%s\n' "$PORT"
}

stop_broker() {
  [ -d "$DIR" ] || return 0
  stop_pidfile "$DIR/mosquitto.pid" mosquitto 10
}

# A port the kernel reports free right now (bounded search below the ephemeral range, 32768 and up
# by default, so that no outgoing connection can take it between this check and mosquitto's bind).
spare_port() {
  local p i
  for i in $(seq 1 50); do
    p=$((10000 + RANDOM % 20000))
    port_open "$p" || {
      printf '%s\n' "$p"
      return 0
    }
  done
  die "no spare port found"
}

smoke() {
  local out
  SMOKE_TMP="$(mktemp -d)"
  DIR="$SMOKE_TMP"
  PORT="$(spare_port)"
  trap 'stop_broker; rm -rf "$SMOKE_TMP"' EXIT
  start_broker >/dev/null
  mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t outpost/smoke -C 1 -W 10 >"$SMOKE_TMP/out" &
  local sub=$!
  # Publish until the subscriber (which may still be connecting) has received one message.
  local i
  for i in $(seq 1 50); do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t outpost/smoke -m "hello $i" || true
    [ -s "$SMOKE_TMP/out" ] && break
    sleep 0.2
  done
  wait "$sub" || die "mosquitto_sub did not receive the smoke message"
  out="$(cat "$SMOKE_TMP/out")"
  log "smoke ok: received '$out' on 127.0.0.1:$PORT"
}

case "$cmd" in
check)
  ensure_mosquitto
  mosquitto -h 2>/dev/null | head -n 1 >&2 || true
  ;;
start)
  ensure_mosquitto
  start_broker
  ;;
stop) stop_broker ;;
smoke)
  ensure_mosquitto
  smoke
  ;;
*) die "unknown command '$cmd' (check | start | stop | smoke)" ;;
esac
