# shellcheck shell=bash
# Helpers shared by the bench scripts (sourced, never run): compare.sh, deflate_compare.sh,
# fanout.sh.
#
#   ROOT=...; source "$ROOT/benches/lib.sh"
#
# Needs ROOT (the repository root). Sets TARGET_DIR (cargo's, honouring CARGO_TARGET_DIR),
# BIN (its release directory) and NODE_DIR (the Node peers).

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# shellcheck disable=SC2034 # used by the scripts that source this file
BIN="$TARGET_DIR/release"
NODE_DIR="$ROOT/benches/peers/node"

# need COMMAND WHY: exit with a message unless COMMAND is on the PATH.
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "$(basename "$0"): $1 is required ($2)" >&2
        exit 1
    }
}

# ensure_node_peers: `npm ci` in benches/peers/node unless node_modules matches its lock file.
ensure_node_peers() {
    if [[ ! -f "$NODE_DIR/node_modules/.package-lock.json" ||
        "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]]; then
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund >&2)
    fi
}

# --- processes and ports, for the scripts that start servers (compare.sh, fanout.sh) ----------

# STARTED_PIDS: every process a script started; stop_started stops them all (call it from the
# EXIT trap).
STARTED_PIDS=()

# stop_started: SIGTERM to every process in STARTED_PIDS, SIGKILL to those still there 0.3 s later.
stop_started() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${STARTED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

# stop_process PID TENTHS (SIGTERM, a bounded wait, SIGKILL), shared with tests/lib.sh:
# shellcheck source=tests/process.sh
source "$ROOT/tests/process.sh"

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_listening NAME PID PORT LOG TENTHS: returns once PORT accepts connections; exits with
# NAME's LOG if PID ends first, or with a message after TENTHS tenths of a second.
wait_listening() {
    local name="$1" pid="$2" port="$3" log="$4" tenths="$5"
    for _ in $(seq 1 "$tenths"); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$(basename "$0"): $name did not start:" >&2
            cat "$log" >&2
            exit 1
        fi
        if port_in_use "$port"; then
            return
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): $name is not listening on $port after $((tenths / 10)) s" >&2
    exit 1
}

# pin_cpus WARNING: servers on CPU 0 (SERVER_CPU) and the load generator on CPU 1 (LOAD_CPU),
# or both unpinned with WARNING on a 1-CPU machine.
pin_cpus() {
    if [[ "$(nproc)" -ge 2 ]]; then
        SERVER_CPU=(taskset -c 0)
        LOAD_CPU=(taskset -c 1)
    else
        echo "$(basename "$0"): only $(nproc) CPU: $1" >&2
        SERVER_CPU=()
        LOAD_CPU=()
    fi
}
