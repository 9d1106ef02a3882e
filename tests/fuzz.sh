#!/usr/bin/env bash
# Fuzzes duplex-core with cargo-fuzz (libFuzzer, nightly Rust): every target of fuzz/ in turn.
#
#   tests/fuzz.sh [SECONDS]                 each target for SECONDS (default 30)
#   FUZZ_TARGETS="mask utf8" tests/fuzz.sh  only those targets
#
# Installs what it needs: the nightly toolchain (minimal profile) and a pinned cargo-fuzz.
#
# Each target fuzzes into a scratch corpus, tests/.cache/fuzz/corpus/TARGET (kept between runs,
# seeded from the committed one), with the committed seeds fuzz/corpus/TARGET as a second,
# read-only directory: libFuzzer writes new inputs to the first directory only, so runs never
# add files to the repository.
#
# A crash, a failed property (a panic in fuzz/src/checks.rs), a timeout or running out of memory
# fails the script after all targets ran. The input is kept in fuzz/artifacts/TARGET/; reproduce
# it with
#   (cd fuzz && cargo +nightly fuzz run TARGET artifacts/TARGET/crash-...)
# and keep it as a regression test by copying it to fuzz/corpus/TARGET/ under a name that says
# what it found: core/tests/fuzz_regressions.rs replays every corpus file on stable Rust.
set -euo pipefail
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_DIR="$REPO_ROOT/fuzz"
SCRATCH="$CACHE_DIR/fuzz"

seconds=${1:-30}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "usage: tests/fuzz.sh [SECONDS]"

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version 2>/dev/null | grep -qF " $CARGO_FUZZ_VERSION"; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

cd "$FUZZ_DIR"
# The fuzz crate is its own workspace; keep its instrumented build out of the main target dir.
export CARGO_TARGET_DIR="$FUZZ_DIR/target"

if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
((${#targets[@]} > 0)) || die "no fuzz targets found"

log "building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build || die "fuzz targets do not build"

# fuzz_one TARGET: fuzz one target for $seconds; its status is the fuzzer's.
fuzz_one() {
    local target=$1 seeds corpus logfile artifacts before rc stats new written artifact
    seeds="$FUZZ_DIR/corpus/$target"
    [[ -d $seeds ]] || die "no seed corpus $seeds"
    corpus="$SCRATCH/corpus/$target"
    mkdir -p "$corpus" "$SCRATCH/logs"
    # Seeds already in the scratch corpus are left as they are (cp -n), which is not an error.
    cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    logfile="$SCRATCH/logs/$target.log"
    artifacts="$FUZZ_DIR/artifacts/$target"
    mkdir -p "$artifacts"
    before=$(find "$artifacts" -type f | sort)

    log "$target: ${seconds}s"
    rc=0
    # The outer timeout only guards against a hung run; libFuzzer stops itself. The binaries
    # are built already, so `fuzz run` only runs (-j1 keeps it from rebuilding in parallel).
    timeout --kill-after=10 $((seconds + 300)) \
        cargo +nightly fuzz run "$target" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        >"$logfile" 2>&1 || rc=$?

    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logfile" | tail -n 1) || stats="(no DONE line)"
    if ((rc == 0)); then
        log "$target: ok (${stats#*DONE   })"
        return 0
    fi

    if grep -q 'panicked at' "$logfile"; then
        # A failed property: where, and the message.
        grep -m 1 -A 1 'panicked at' "$logfile" >&2
    else
        show_log "$logfile" # crash, timeout, out of memory: libFuzzer's own report
    fi
    new=$(comm -13 <(printf '%s\n' "$before") <(find "$artifacts" -type f | sort))
    written=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logfile" | tail -n 1)
    for artifact in $written $new; do
        [[ -f $artifact ]] || continue
        log "$target: input $artifact ($(wc -c <"$artifact") bytes):"
        od -An -tx1 -v "$artifact" | head -n 32 >&2
        log "$target: reproduce with (cd fuzz && cargo +nightly fuzz run $target ${artifact#"$FUZZ_DIR"/})"
        break
    done
    log "$target: FAILED (exit $rc)"
    return "$rc"
}

# libFuzzer uses one core per target: run FUZZ_JOBS targets at a time (default: the number of
# cores), each for the full $seconds, and collect every one's status.
jobs_max=${FUZZ_JOBS:-$(nproc)}
failed=()
start=$SECONDS
pids=()
names=()
collect_first() {
    local rc=0
    wait "${pids[0]}" || rc=$?
    ((rc == 0)) || failed+=("${names[0]}")
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
}
for target in "${targets[@]}"; do
    while ((${#pids[@]} >= jobs_max)); do collect_first; done
    fuzz_one "$target" &
    pids+=("$!")
    names+=("$target")
done
while ((${#pids[@]} > 0)); do collect_first; done

log "fuzzed ${#targets[@]} targets in $((SECONDS - start))s"
((${#failed[@]} == 0)) || die "fuzz targets failed: ${failed[*]}"
