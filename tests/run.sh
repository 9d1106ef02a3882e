#!/usr/bin/env bash
# The full Duplex suite: what CI runs (.ci/run) and what a developer runs
# before pushing.
#
#   tests/run.sh              every step that applies, in order
#   tests/run.sh quick        the quick tier: fmt, clippy, unit/property/doc tests, the no_std
#                             builds and the runner's self-test (a few minutes, warm)
#   tests/run.sh STEP...      only those steps (in suite order), e.g. `tests/run.sh clippy test`
#   tests/run.sh --list       the steps and what each runs
#
# Steps run in order and stop at the first failure. Conformance and interop
# steps are enabled only once their pieces exist (native/ for the server and
# client). Each step is a `step_<name>` function registered in plan_steps:
# adding one (fuzz, wasm, node tests, chromium...) is a function and a line.
# Every command of a step counts: a step runs in a subshell with errexit on
# (and outside any `if`/`||`, where bash would silently turn errexit off), so
# the first failing command fails the step. The `runner` step proves it.
# The last line is always `run.sh: N passed, M failed`.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

# --- steps -------------------------------------------------------------------

step_fmt() {
    ensure_component rustfmt
    cargo fmt --all --check
}

step_clippy() {
    ensure_component clippy
    cargo clippy --workspace --all-targets -- -D warnings
    # The core alone, without the features the workspace turns on (deflate, channel), and with
    # every feature (stomp too).
    cargo clippy -p duplex-core --all-targets -- -D warnings
    cargo clippy -p duplex-core --all-targets --features channel,deflate,stomp -- -D warnings
}

step_test() {
    cargo test --workspace
    # The core alone, without the features the workspace turns on (deflate, channel).
    cargo test -p duplex-core --lib
    cargo test -p duplex-core --features channel,stomp --lib
    cargo test -p duplex-core --features channel,stomp --doc
    # The fuzz corpora of every target, STOMP's included (no other crate turns `stomp` on yet).
    cargo test -p duplex-core --features channel,deflate,stomp --test fuzz_regressions
}

step_package() {
    # The crates as crates.io would get them: each packaged and built alone from its .crate.
    # Both in one command (cargo 1.90+): cargo verifies duplex against the duplex-core just
    # packaged (a local registry) instead of looking for duplex-core on crates.io, where it is
    # not yet published.
    # In a target directory of its own: cargo takes a registry crate's build as fresh by name and
    # version, never by content, and unpacks the local registry under $CARGO_HOME/registry/src
    # by the hash of its path; with the usual target/ an earlier run's duplex-core (older code,
    # same 0.1.0) would be reused and duplex verified against it.
    local verify_dir
    verify_dir=$(mktemp -d)
    CARGO_TARGET_DIR="$verify_dir" cargo publish --dry-run --allow-dirty -p duplex-core -p duplex
    rm -rf -- "$verify_dir"
    # Their documentation as docs.rs builds it, with every intra-doc link resolved.
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p duplex-core -p duplex -p duplex-tokio --all-features
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p duplex-core
}

step_wasm_core() {
    # no_std proof: the core must build for a target without std.
    ensure_target wasm32-unknown-unknown
    cargo build -p duplex-core --target wasm32-unknown-unknown
    cargo build -p duplex-core --features deflate,channel,stomp --target wasm32-unknown-unknown
}

step_native_build() {
    cargo build --release -p duplex
    if [[ -f native/examples/autobahn_client.rs ]]; then
        cargo build --release -p duplex --example autobahn_client
    fi
    if [[ -f benches/load/Cargo.toml ]]; then
        cargo build --release -p duplex-load
    fi
}

step_setup() {
    bash tests/setup.sh
}

step_autobahn_server() {
    bash tests/autobahn.sh server
}

step_autobahn_client() {
    bash tests/autobahn.sh client
}

step_tokio_build() {
    # Example names are unique across the workspace (the client's tokio_ prefix: native has an
    # autobahn_client too): cargo puts every package's examples in one target/release/examples/.
    cargo build --release -p duplex-tokio --example autobahn_server --example tokio_autobahn_client
}

step_autobahn_tokio_server() {
    bash tests/autobahn.sh tokio-server
}

step_autobahn_tokio_client() {
    bash tests/autobahn.sh tokio-client
}

step_interop() {
    bash tests/interop.sh
}

step_demo() {
    bash tests/demo.sh
}

step_tls() {
    bash tests/tls.sh
}

step_wasm() {
    bash tests/wasm.sh
}

step_bundle() {
    bash tests/bundle.sh
}

step_autobahn_wasm_client() {
    bash tests/autobahn.sh wasm-client
}

step_deploy() {
    bash tests/deploy.sh
}

step_cluster() {
    bash tests/cluster.sh
}

step_api() {
    bash tests/api.sh
}

step_stomp() {
    bash tests/stomp.sh
}

step_fallback() {
    bash tests/fallback.sh
}

step_cluster_bench() {
    bash tests/setup.sh redis
    bash benches/cluster.sh --quick
}

step_transports_bench() {
    bash tests/setup.sh node
    bash benches/transports.sh --quick
}

step_load() {
    bash tests/load.sh
}

step_fuzz() {
    bash tests/fuzz.sh "${FUZZ_SECONDS:-30}"
}

# The runner's self-test: run.sh itself, on throwaway steps, must fail when a step's *first*
# command fails (and not run what follows), and pass when every command passes.
step_runner() {
    local out rc
    rc=0
    out=$(RUN_SH_SELFTEST=1 bash tests/run.sh selftest-pass selftest-fail 2>&1) || rc=$?
    if ((rc == 0)); then
        printf '%s\n' "$out"
        echo "runner: a step whose first command fails did not fail run.sh" >&2
        return 1
    fi
    if [[ $(tail -n 1 <<<"$out") != "run.sh: 1 passed, 1 failed" ]]; then
        printf '%s\n' "$out"
        echo "runner: the last line is not 'run.sh: 1 passed, 1 failed'" >&2
        return 1
    fi
    if grep -q 'selftest: after the failure' <<<"$out"; then
        printf '%s\n' "$out"
        echo "runner: the command after a failing one ran" >&2
        return 1
    fi
    rc=0
    out=$(RUN_SH_SELFTEST=1 bash tests/run.sh selftest-pass 2>&1) || rc=$?
    if ((rc != 0)) || [[ $(tail -n 1 <<<"$out") != "run.sh: 1 passed, 0 failed" ]]; then
        printf '%s\n' "$out"
        echo "runner: a passing step did not pass (exit $rc)" >&2
        return 1
    fi
    grep -q 'selftest: pass step ran to its end' <<<"$out" || {
        printf '%s\n' "$out"
        echo "runner: the passing step did not run to its end" >&2
        return 1
    }
    echo "runner: a failing first command fails the suite; a passing step passes"
}

# Throwaway steps for step_runner (registered only when RUN_SH_SELFTEST=1).
step_selftest_fail() {
    false # the first command fails: nothing after it may run
    echo "selftest: after the failure"
}

step_selftest_pass() {
    true
    echo "selftest: pass step ran to its end"
}

# --- the plan ----------------------------------------------------------------

STEP_NAMES=()
STEP_FUNCS=()
STEP_DESCS=()

# add_step NAME FUNCTION DESCRIPTION
add_step() {
    STEP_NAMES+=("$1")
    STEP_FUNCS+=("$2")
    STEP_DESCS+=("$3")
}

# The quick tier: everything that needs only cargo, in a few minutes on a warm machine.
QUICK_STEPS=(fmt clippy test wasm-core runner)

plan_steps() {
    if [[ -n ${RUN_SH_SELFTEST:-} ]]; then
        add_step selftest-pass step_selftest_pass "runner self-test: a step that passes"
        add_step selftest-fail step_selftest_fail "runner self-test: a step whose first command fails"
    fi
    add_step runner step_runner "run.sh's self-test: a failing first command fails the suite"
    add_step fmt step_fmt "cargo fmt --all --check"
    add_step clippy step_clippy "cargo clippy --workspace --all-targets -- -D warnings"
    add_step test step_test "cargo test --workspace"
    if [[ -f native/Cargo.toml ]]; then
        add_step package step_package "cargo publish --dry-run -p duplex-core -p duplex; cargo doc -D warnings"
    fi
    add_step wasm-core step_wasm_core "cargo build -p duplex-core --target wasm32-unknown-unknown"
    if [[ -f native/Cargo.toml ]]; then
        add_step native-build step_native_build "cargo build --release -p duplex (+ example autobahn_client)"
        add_step setup step_setup "tests/setup.sh (kosoku + websockets venv, npm ws, Chromium + playwright-core)"
        add_step autobahn-server step_autobahn_server "tests/autobahn.sh server (duplex echo vs kosoku)"
        if [[ -f native/examples/autobahn_client.rs ]]; then
            add_step autobahn-client step_autobahn_client "tests/autobahn.sh client (autobahn_client vs kosoku fuzzingserver)"
        fi
        if [[ -f tokio/Cargo.toml ]]; then
            add_step tokio-build step_tokio_build "cargo build --release -p duplex-tokio --example autobahn_server --example tokio_autobahn_client"
            add_step autobahn-tokio-server step_autobahn_tokio_server "tests/autobahn.sh tokio-server (duplex-tokio echo vs kosoku, 397 cases)"
            add_step autobahn-tokio-client step_autobahn_tokio_client "tests/autobahn.sh tokio-client (duplex-tokio client vs kosoku fuzzingserver, 397 cases)"
        fi
        if [[ -f wasm/Cargo.toml ]]; then
            add_step wasm step_wasm "tests/wasm.sh (build the duplex-ws package, node --test its suites)"
            add_step bundle step_bundle "tests/bundle.sh (duplex-ws unbuilt, npm pack + install, esbuild and Vite pages in Chromium)"
            add_step autobahn-wasm-client step_autobahn_wasm_client "tests/autobahn.sh wasm-client (DuplexSocket vs kosoku fuzzingserver, 397 cases)"
        fi
        add_step interop step_interop "tests/interop.sh (Python websockets, Node ws, duplex connect, headless Chromium)"
        if [[ -f wasm/Cargo.toml ]]; then
            add_step demo step_demo "tests/demo.sh (demo page with the embedded WASM client at desktop and phone widths, a 1 MiB file peer to peer over WebRTC between two pages, /dashboard under traffic, headless Chromium)"
        fi
        add_step deploy step_deploy "tests/deploy.sh (docs/deploy.md's nginx and HAProxy configs in front of duplex serve)"
        add_step cluster step_cluster "tests/cluster.sh (duplex serve --broker: three nodes over a real redis-server; order, recovery, dedup, Redis killed and back; tests/cluster_lb.sh: behind HAProxy, the demo in Chromium on two pages, a node SIGKILLed)"
        add_step api step_api "tests/api.sh (curl against duplex serve --api-key: the README's publish reaches a duplex connect member; keep-alive reads, 401, 405; the key in no log)"
        add_step stomp step_stomp "tests/stomp.sh (@stomp/stompjs in Node and in headless Chromium beside duplex.v1 clients: one sequence, receipts, since, heart-beats, ERROR frames, JWT passcode)"
        if [[ -f wasm/Cargo.toml ]]; then
            add_step fallback step_fallback "tests/fallback.sh (nginx without upgrades in front of duplex serve: the demo's WASM client in Chromium falls back to SSE, to long polling behind a buffering nginx; messages with a WebSocket page, a server restart; fallback time printed; tests/fallback_lb.sh: SSE and long-polling sessions on three duplex serve --broker nodes behind round-robin HAProxy, the node of a session SIGKILLed)"
        fi
        add_step tls step_tls "tests/tls.sh (wss/https: openssl s_client, curl, Python websockets, duplex connect, headless Chromium; bad certificates, stalled handshake, SIGTERM)"
        if [[ -f benches/load/Cargo.toml ]]; then
            add_step load step_load "tests/load.sh (duplex-load verifies every echo under load, ws:// and wss://)"
            add_step cluster-bench step_cluster_bench "benches/cluster.sh --quick (300 members on 1 vs 3 duplex serve --broker nodes and 2 Socket.IO + redis-adapter nodes; every delivery checked, figures printed, not judged)"
            add_step transports-bench step_transports_bench "benches/transports.sh --quick (200 subscribers of one duplex serve room over WebSocket, SSE + POST and long polling + POST; every delivery checked once and in order, CPU and latency printed, not judged)"
        fi
    fi
    if [[ -f fuzz/Cargo.toml ]]; then
        add_step fuzz step_fuzz "tests/fuzz.sh: every cargo-fuzz target for \${FUZZ_SECONDS:-30} s, one per core (nightly)"
    fi
}

# --- helpers -------------------------------------------------------------------

ensure_component() {
    local comp=$1
    if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
        echo "run.sh: installing rustup component $comp"
        rustup component add "$comp"
    fi
}

ensure_target() {
    local target=$1
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "run.sh: installing rustup target $target"
        rustup target add "$target"
    fi
}

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# --- main ----------------------------------------------------------------------

main() {
    plan_steps
    local i

    if [[ ${1:-} == --list ]]; then
        for i in "${!STEP_NAMES[@]}"; do
            printf '%-22s %s\n' "${STEP_NAMES[$i]}" "${STEP_DESCS[$i]}"
        done
        return 0
    fi

    # Select steps: all, or those named on the command line (suite order).
    local selected=()
    if [[ $# == 1 && $1 == quick ]]; then
        set -- "${QUICK_STEPS[@]}"
    fi
    if (($#)); then
        local want found
        for want in "$@"; do
            found=
            for i in "${!STEP_NAMES[@]}"; do
                [[ ${STEP_NAMES[$i]} == "$want" ]] && found=1
            done
            [[ -n $found ]] || die "unknown or disabled step '$want' (see tests/run.sh --list)"
        done
        for i in "${!STEP_NAMES[@]}"; do
            for want in "$@"; do
                [[ ${STEP_NAMES[$i]} == "$want" ]] && selected+=("$i")
            done
        done
    else
        selected=("${!STEP_NAMES[@]}")
    fi

    local total=${#selected[@]} n=0 passed=0 rc start took suite_start=$SECONDS
    local timings=()
    echo "run.sh: ${total} steps: $(for i in "${selected[@]}"; do printf '%s ' "${STEP_NAMES[$i]}"; done)"
    for i in "${selected[@]}"; do
        n=$((n + 1))
        printf '\n===== [%d/%d] %s: %s =====\n' "$n" "$total" "${STEP_NAMES[$i]}" "${STEP_DESCS[$i]}"
        start=$SECONDS
        # A subshell outside any `if`/`||` that turns errexit on for itself: a
        # subshell inherits the caller's options, so with only `set +e` around it,
        # errexit would be off inside and the step's status would be its last
        # command's.
        set +e
        (
            set -euo pipefail
            "${STEP_FUNCS[$i]}"
        )
        rc=$?
        set -e
        took=$((SECONDS - start))
        timings+=("$(printf '  %-22s %-6s %s' "${STEP_NAMES[$i]}" "$( ((rc == 0)) && echo ok || echo FAILED)" "$(fmt_secs "$took")")")
        if ((rc != 0)); then
            printf '===== [%d/%d] %s FAILED (exit %d) after %s =====\n' \
                "$n" "$total" "${STEP_NAMES[$i]}" "$rc" "$(fmt_secs "$took")"
            printf '\nrun.sh: summary (stopped at the first failure, total %s)\n' "$(fmt_secs $((SECONDS - suite_start)))"
            printf '%s\n' "${timings[@]}"
            echo "run.sh: FAILED step '${STEP_NAMES[$i]}': ${STEP_DESCS[$i]}"
            echo "run.sh: $passed passed, 1 failed"
            exit 1
        fi
        passed=$((passed + 1))
        printf -- '----- [%d/%d] %s ok (%s)\n' "$n" "$total" "${STEP_NAMES[$i]}" "$(fmt_secs "$took")"
    done

    printf '\nrun.sh: summary (total %s)\n' "$(fmt_secs $((SECONDS - suite_start)))"
    printf '%s\n' "${timings[@]}"
    echo "run.sh: $passed passed, 0 failed"
}

main "$@"
