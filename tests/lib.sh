# shellcheck shell=bash
# Helpers shared by the test scripts (sourced, never run).
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets REPO_ROOT and cds there. Processes started with `start_bg` are killed
# when the sourcing script exits (trap on EXIT), so a failing or interrupted
# test never leaves a server behind.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
cd "$REPO_ROOT" || exit 1

# Used by the scripts that source this file.
# shellcheck disable=SC2034
CACHE_DIR="$REPO_ROOT/tests/.cache"
# shellcheck disable=SC2034
VENV="$CACHE_DIR/venv"
# shellcheck disable=SC2034
INTEROP_DIR="$REPO_ROOT/tests/interop"
# shellcheck disable=SC2034
BROWSER_DIR="$REPO_ROOT/tests/browser"
# The browser the Chromium tests drive (tests/browser/lib.mjs reads the same variable).
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM
# Overridable to test the harness; follows CARGO_TARGET_DIR like cargo does.
DUPLEX_BIN="${DUPLEX_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/duplex}"

# The name used in messages: the script's own name.
SCRIPT_NAME="$(basename "${BASH_SOURCE[1]:-$0}")"

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    printf '%s: FAIL: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Background processes this script started, killed on exit.
BG_PIDS=()

# start_bg LOGFILE CMD... : start CMD in the background, its output to
# LOGFILE; the pid is left in BG_PID.
start_bg() {
    local logfile=$1
    shift
    "$@" >"$logfile" 2>&1 </dev/null &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# shellcheck source=tests/process.sh
source "$REPO_ROOT/tests/process.sh"

# stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL. Never fails.
stop_pid() {
    stop_process "$1" 50
}

cleanup_bg() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        stop_pid "$pid"
    done
    BG_PIDS=()
}
trap cleanup_bg EXIT

# wait_for_port PORT PID SECONDS : wait until 127.0.0.1:PORT accepts TCP.
# Fails early if PID (the process that should listen) has exited.
wait_for_port() {
    local port=$1 pid=$2 timeout=$3 deadline
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited before listening on 127.0.0.1:$port"
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "nothing accepted on 127.0.0.1:$port within ${timeout}s"
    return 1
}

# start_server LOGFILE PORT SECONDS WHAT CMD... : start_bg CMD, then wait up to SECONDS for it to
# listen on 127.0.0.1:PORT; if it does not, show its log and die saying WHAT did not start.
# The pid is left in BG_PID.
start_server() {
    local logfile=$1 port=$2 timeout=$3 what=$4
    shift 4
    start_bg "$logfile" "$@"
    wait_for_port "$port" "$BG_PID" "$timeout" || {
        show_log "$logfile"
        die "$what did not start"
    }
}

# wait_pid PID SECONDS : wait for PID to exit by itself, bounded. Returns its
# exit status, or 124 on timeout (and the process is then killed).
wait_pid() {
    local pid=$1 timeout=$2 deadline rc
    deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            stop_pid "$pid"
            return 124
        fi
        sleep 0.2
    done
    rc=0
    wait "$pid" || rc=$?
    return "$rc"
}

# show_log FILE : print the last lines of a server log, for failure reports.
show_log() {
    [[ -s $1 ]] || return 0
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 30 "$1" >&2
    printf -- '---\n' >&2
}

# haproxy_round_robin DIR PORT SECONDS EXTRA SERVER_LINE... : HAProxy with docs/deploy/haproxy.cfg,
# its `bind :80` moved to 127.0.0.1:PORT and its one `server` line replaced by `balance
# roundrobin`, EXTRA (backend lines, may be empty) and the SERVER_LINEs; no stickiness (checked),
# `haproxy -c` first. Started in the background (log DIR/haproxy.log, configuration
# DIR/haproxy.cfg); returns once GET /healthz answers ok through it (every node up for it),
# within SECONDS, or dies. Used by tests/cluster_lb.sh and tests/fallback_lb.sh.
haproxy_round_robin() {
    local dir=$1 port=$2 timeout=$3 extra=$4 haproxy cfg server_line servers_text deadline
    shift 4
    haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
    [[ -x $haproxy ]] || die "haproxy not found (tests/setup.sh haproxy installs it)"
    cfg="$dir/haproxy.cfg"
    server_line='^\s*server duplex1 127\.0\.0\.1:9001 check inter 2s$'
    grep -Eq '^\s*bind :80$' docs/deploy/haproxy.cfg || die "docs/deploy/haproxy.cfg: no 'bind :80' to move"
    grep -q "$server_line" docs/deploy/haproxy.cfg || die "docs/deploy/haproxy.cfg: no 'server duplex1 127.0.0.1:9001 check inter 2s' to replace"
    servers_text=$(printf '%s\n' "    balance roundrobin" ${extra:+"$extra"} "$@")
    python3 -c '
import re, sys
port, servers, src = sys.argv[1:]
text = open(src).read()
text = re.sub(r"(?m)^(\s*)bind :80$", rf"\1bind 127.0.0.1:{port}", text)
text = re.sub(r"(?m)^\s*server duplex1 127\.0\.0\.1:9001 check inter 2s$", lambda m: servers, text)
sys.stdout.write(text)
' "$port" "$servers_text" docs/deploy/haproxy.cfg >"$cfg"
    ! grep -Eq 'stick|cookie|balance source|hash-type' "$cfg" || die "the HAProxy configuration has stickiness: $(grep -E 'stick|cookie|balance source|hash-type' "$cfg")"
    "$haproxy" -c -q -f "$cfg" || {
        cat "$cfg" >&2
        die "haproxy -c refused the configuration above"
    }
    # `-n`: see tests/deploy.sh (a test machine's file limit may be lower than the production maxconn).
    start_server "$dir/haproxy.log" "$port" "$timeout" haproxy "$haproxy" -n 1000 -f "$cfg" -db
    # Until HAProxy's first health checks passed: every node answers through it.
    deadline=$((SECONDS + timeout))
    until [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null | head -1) == ok ]]; do
        ((SECONDS < deadline)) || die "GET /healthz through HAProxy did not answer ok within ${timeout}s"
        sleep 0.2
    done
    log "$("$haproxy" -v | head -1 | cut -d' ' -f1-3) on 127.0.0.1:$port, round-robin over $# nodes"
}
