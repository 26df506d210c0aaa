#!/usr/bin/env bash
# `npm run bench [-- --full]`: installs what the benchmarks need, then runs them; writes docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # As in scripts/test.sh: npm ci refuses a lock file that lacks other platforms' optional packages.
  npm ci --no-audit --no-fund >&2 || npm install --no-save --no-audit --no-fund >&2
fi
# Mosquitto (the reference broker) and the private Docker engine (agent memory) when we can start them.
bash scripts/mosquitto.sh check >&2
if [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" = 0 ]; then
  if engine_env="$(bash scripts/docker-engine.sh start)"; then eval "$engine_env"; export DOCKER_HOST; fi
fi
npm run --silent build >&2
exec node --import tsx scripts/bench/main.ts "$@"
