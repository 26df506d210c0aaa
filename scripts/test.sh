#!/usr/bin/env bash
# Outpost's test command (`npm test`; CI runs it through .ci/run). From a fresh Debian machine:
#   1. npm ci            when node_modules is missing or package-lock.json is newer than it
#                        (falls back to `npm install --no-save` if the lock file is out of sync)
#   2. Debian packages   docker.io busybox-static mosquitto mosquitto-clients docker-registry
#                        openssl iproute2 (apt-get, only what is missing)
#   3. Docker engine     the private engine and test images (scripts/docker-engine.sh)
#   4. build             npm run build (tsc, then the agent bundle dist/outpost-agent.cjs that
#                        bin/outpost-agent runs), then tsc -p tsconfig.test.json --noEmit (tests' types)
#   5. lint              biome check . (honouring .gitignore, so .tmp/ and dist/ are not linted)
#   6. tests             npx vitest run "$@"   (extra arguments pass through: files, -t, ...)
# Re-runs skip what is already done. Every step runs even when an earlier gate failed, so one run
# shows everything; the exit code is vitest's when it failed, else 1 when the build or lint
# failed, else 0.
#
# Environment:
#   OUTPOST_TEST_FAST=1     skip the build and lint steps (quick local iterations)
#   OUTPOST_KEEP_ENGINE=0|1 stop the Docker engine at the end when this run started it
#                           (default: stop under CI=true, keep running otherwise)
#   plus the OUTPOST_DOCKER_* variables of scripts/docker-engine.sh
set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OUTPOST_ROOT" || exit 1
exec </dev/null

T0=$(now_ms)
T_SECTION=$T0
declare -a SUMMARY=()
step() {
  local now
  now=$(now_ms)
  [ "${#SUMMARY[@]}" -gt 0 ] && SUMMARY[-1]="${SUMMARY[-1]} ($(((now - T_SECTION) / 1000)).$(((now - T_SECTION) % 1000 / 100)) s)"
  T_SECTION=$now
  [ $# -gt 0 ] || return 0
  SUMMARY+=("$1")
  section "$1"
}
GATE_FAILED=()

# 1. Node dependencies -----------------------------------------------------------------------
step "node dependencies"
if [ ! -d node_modules ] || [ ! -e node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "running npm ci"
  if ! npm ci --no-audit --no-fund >&2; then
    # npm ci refuses a lock file that is out of sync with package.json (e.g. one that lacks other
    # platforms' optional packages). Install the same pinned versions without rewriting either file,
    # and say so loudly: the lock file needs regenerating (npm install --package-lock-only).
    log "WARNING: npm ci failed (lock file out of sync?); falling back to npm install --no-save"
    npm install --no-save --no-audit --no-fund >&2 || die "npm install failed"
  fi
else
  log "node_modules up to date"
fi

# 2. Debian packages -------------------------------------------------------------------------
step "debian packages"
ensure_pkgs docker.io busybox-static mosquitto mosquitto-clients docker-registry openssl iproute2
log "present: docker.io busybox-static mosquitto mosquitto-clients docker-registry openssl iproute2"

# 3. Private Docker engine and test images ---------------------------------------------------
step "docker engine + test images"
ENGINE_WAS_UP=0
bash scripts/docker-engine.sh status >/dev/null 2>&1 && ENGINE_WAS_UP=1
if engine_env="$(bash scripts/docker-engine.sh start)"; then
  eval "$engine_env"
  export OUTPOST_TEST_DOCKER_HOST="$DOCKER_HOST"
  log "DOCKER_HOST=$DOCKER_HOST"
  keep_default=1
  [ "${CI:-}" = true ] && keep_default=0
  if [ "$ENGINE_WAS_UP" -eq 0 ] && [ "${OUTPOST_KEEP_ENGINE:-$keep_default}" = 0 ]; then
    trap 'bash "$OUTPOST_ROOT/scripts/docker-engine.sh" stop >/dev/null 2>&1 || true' EXIT
  fi
else
  # Not fatal here: unit tests still run; tests that need Docker fail with this reason
  # (test/helpers/global-setup.ts retries once and records the outcome).
  log "WARNING: the private Docker engine could not be started; Docker tests will fail"
fi

# 4. Build -----------------------------------------------------------------------------------
if [ "${OUTPOST_TEST_FAST:-0}" = 1 ]; then
  log "OUTPOST_TEST_FAST=1: skipping build and lint"
else
  step "build (tsc + agent bundle)"
  npm run --silent build >&2 || GATE_FAILED+=("build")
  step "typecheck tests (tsc -p tsconfig.test.json)"
  npx tsc -p tsconfig.test.json --noEmit >&2 || GATE_FAILED+=("typecheck-tests")

  # 5. Lint --------------------------------------------------------------------------------
  step "lint (biome)"
  npx biome check --vcs-enabled=true --vcs-client-kind=git --vcs-use-ignore-file=true . >&2 ||
    GATE_FAILED+=("lint")
fi

# 6. Tests -----------------------------------------------------------------------------------
step "tests (vitest run $*)"
REPORT="$(mktemp)"
npx vitest run --reporter=default --reporter=json --outputFile.json="$REPORT" "$@"
RC=$?
step

section "summary"
printf '  %s\n' "${SUMMARY[@]}" >&2
printf '  total %s s\n' "$((($(now_ms) - T0) / 1000))" >&2
[ "${#GATE_FAILED[@]}" -gt 0 ] && log "FAILED gates: ${GATE_FAILED[*]}"
# A plain closing line that any CI reader understands.
if [ -s "$REPORT" ]; then
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
    const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
    console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  ' "$REPORT" || true
fi
rm -f "$REPORT"

if [ "$RC" -ne 0 ]; then exit "$RC"; fi
[ "${#GATE_FAILED[@]}" -eq 0 ] || exit 1
exit 0
