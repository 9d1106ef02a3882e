# shellcheck shell=bash
# One helper shared by tests/lib.sh and benches/lib.sh (sourced, never run).

# stop_process PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default 50) for PID to
# end, then SIGKILL; reaps it. Never fails.
stop_process() {
    local pid=$1 tenths=${2:-50} i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
