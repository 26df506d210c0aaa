#!/usr/bin/env bash
# `npm run bench [-- --full]`: installs what the benchmarks need, then runs them; writes docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund; fi
exec node --import tsx scripts/bench/main.ts "$@"
