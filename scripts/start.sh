#!/usr/bin/env bash
# The README's main command (`npm start`): from a fresh machine, install what is missing, build, start
# the private Docker engine with its local images when we can (root), and run `outpost up` — broker +
# controller + a local agent with a sample stack. Extra arguments go to `outpost up` (see --help).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OUTPOST_ROOT"

section "node dependencies"
if [ ! -d node_modules ] || [ ! -e node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # Same fallback as scripts/test.sh: npm 11 may refuse a lock file lacking other platforms' optional
  # packages; install the pinned versions without rewriting package.json or the lock file.
  npm ci --no-audit --no-fund >&2 || npm install --no-save --no-audit --no-fund >&2 || die "npm install failed"
fi
have openssl || ensure_pkgs openssl

section "build"
npm run --silent build >&2

if [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" = 0 ] && [ "${OUTPOST_NO_DOCKER:-0}" != 1 ]; then
  section "private Docker engine (for the local agent)"
  if engine_env="$(bash scripts/docker-engine.sh start)"; then
    eval "$engine_env"
    export DOCKER_HOST
  else
    log "no Docker engine: outpost up will run without a local agent"
  fi
fi

section "outpost up"
exec node bin/outpost.js up "$@"
