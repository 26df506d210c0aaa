#!/usr/bin/env bash
# `scripts/soak.sh DURATION [--sites N] [--seed S] [--json FILE] [--keep]` — the fault-injection soak
# (docs/RELIABILITY.md): broker + controller + N agents as child processes on loopback, continuous
# deployments, link chaos through fault proxies and SIGKILLs of random components for DURATION
# (e.g. 90s, 30m, 2h; a bare number is seconds), then quiesce and the ledger check. Prints the counts
# (commands, faults injected, losses, duplicates, order violations) and exits non-zero on any
# violation. Needs only Node and openssl (no Docker: agents run the in-memory runtime).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$OUTPOST_ROOT"
[ $# -ge 1 ] || die "usage: scripts/soak.sh DURATION [--sites N] [--seed S] [--json FILE] [--keep]"
# Install only when nothing is installed: an existing node_modules (perhaps shared) is left alone.
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund >&2 || npm install --no-save --no-audit --no-fund >&2 || die "npm install failed"
fi
have openssl || ensure_pkgs openssl
exec node --import tsx scripts/soak.ts "$@"
