#!/usr/bin/env bash
# Several `duplex serve --broker redis://` nodes over a real Redis (Debian's redis-server; each
# test starts its own on a free port): one order per room across nodes, recovery on another
# node and after a node restart, publish-id dedup across nodes, Redis killed and restarted.
# Then tests/cluster_lb.sh: three nodes behind a real HAProxy (round-robin, no stickiness), the
# demo page in Chromium on two pages through it, one node SIGKILLed mid-session.
# The tests are in native/tests/cluster.rs (the broker scripts' own in native/src/serve/redis_broker.rs, and the HTTP transports' in native/tests/fallback.rs), ignored by a plain `cargo test` because they need
# redis-server; here a missing redis-server fails the step.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

bash "$REPO_ROOT/tests/setup.sh" redis
command -v redis-server >/dev/null || die "redis-server not found (tests/setup.sh redis installs it)"
log "$(redis-server --version)"
cd "$REPO_ROOT"
timeout 300 cargo test -p duplex --test cluster -- --ignored --test-threads 2
# The Redis broker's scripts on their own: a given-up join and its compensation, in either order.
timeout 120 cargo test -p duplex --lib -- --ignored serve::redis_broker
# The HTTP transports' sessions across nodes (requests relayed to the session's node).
timeout 120 cargo test -p duplex --test fallback -- --ignored --test-threads 2
bash "$REPO_ROOT/tests/cluster_lb.sh"
