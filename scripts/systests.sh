#!/usr/bin/env bash
# The image and VM suites (crates/systests) as jobs, longest first, each job's output printed
# whole with its duration when it ends; the run fails when any job failed, after all of them ran.
#
# The jobs in `alone` run first, one at a time: the power-cut test boots two VMs of its own.
# The others then run on BALEEN_TEST_WORKERS workers (default 1). Two workers barely pay on two
# cores: the guests are CPU-bound, so each job took about twice as long beside another
# (running_os 1199 s instead of 611 s, vm 856 s instead of 410 s) and the whole run gained
# 4.6 min of 68 (2026-11-25), while timing races in the tests surfaced. Three VMs at once made
# every guest crawl (running_os: 1664 s instead of 505 s), hence the power-cut test alone.
# Every VM has two vCPUs unless its test or BALEEN_VM_CPUS says otherwise: a lone one-vCPU
# guest answers SSH after 61 s instead of 37 s.
#
# Needs what `cargo test -p systests` needs (root, QEMU, built images: see scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# `name  cargo test arguments`; each job runs its tests one at a time (RUST_TEST_THREADS=1).
# The update suite is split by test, its last job taking whatever the others skip.
update_split=(power_cut_at_every_step a_to_b_then_b_to_b unbootable_root_falls_back
    broken_health_check_rolls_back)
jobs=(
    "update-power-cut --test update -- --exact power_cut_at_every_step"
    "running-os --test running_os"
    "update-a-to-b --test update -- --exact a_to_b_then_b_to_b"
    "vm --test vm"
    "update-altboot --test update -- --exact unbootable_root_falls_back"
    "update-health --test update -- --exact broken_health_check_rolls_back"
    "time --test time"
    "update-others --test update --$(printf ' --skip %s' "${update_split[@]}")"
    "config-agent --test config_agent"
    "image-harness --lib --bins --test image --test harness --test timeservers"
    "doctests --doc"
)

# Jobs (by name) that run before the others, one at a time and with no other job beside them.
alone=(update-power-cut)

# Every suite in crates/systests/tests must be some job's `--test`.
for suite in crates/systests/tests/*.rs; do
    suite=$(basename "$suite" .rs)
    # grep without -q reads all its input: with pipefail, an early exit could kill printf (141).
    if ! printf '%s\n' "${jobs[@]}" | grep -- "--test $suite\b" >/dev/null; then
        echo "scripts/systests.sh: suite $suite is in no job; add it to the jobs list" >&2
        exit 1
    fi
done

cargo test --locked -p systests --no-run

out=target/systests/jobs
rm -rf "$out"
mkdir -p "$out"
: >"$out/queue"

# Prints the next job's line and removes it from the queue; fails when the queue is empty.
next_job() {
    (
        flock 9
        line=$(head -n 1 "$out/queue")
        [ -n "$line" ] || exit 1
        sed -i 1d "$out/queue"
        printf '%s\n' "$line"
    ) 9>"$out/queue.lock"
}

# Copies cargo test's output, appending to each `test NAME ... ok` line the seconds since the
# previous one (tests run one at a time, so that is the test's duration).
time_tests() {
    local line now last
    printf -v last '%(%s)T' -1
    while IFS= read -r line; do
        printf -v now '%(%s)T' -1
        case $line in
        "running "*" test"*) last=$now ;;
        "test "*" ... "*)
            line="$line ($((now - last)) s)"
            last=$now
            ;;
        esac
        printf '%s\n' "$line"
    done
}

run_job() {
    local name=$1 start rc=0
    shift
    start=$(date +%s)
    echo "--- $name: started"
    # Passed tests' output too: the figures the tests print (throughput, downtime, latencies).
    local show=(-- --show-output)
    for arg in "$@"; do
        [ "$arg" != -- ] || show=(--show-output)
    done
    RUST_TEST_THREADS=1 cargo test --locked --no-fail-fast -p systests "$@" "${show[@]}" 2>&1 |
        time_tests >"$out/$name.log" || rc=$?
    (
        flock 9
        echo "--- $name: $([ "$rc" = 0 ] && echo ok || echo FAILED) after $(($(date +%s) - start)) s" \
            "(cargo test -p systests $*)"
        cat "$out/$name.log"
        [ "$rc" = 0 ] || echo "$name" >>"$out/failed"
        echo "$name" >>"$out/ended"
    ) 9>"$out/print.lock"
}

worker() {
    local line
    while line=$(next_job); do
        # shellcheck disable=SC2086 # the job's arguments are split on purpose
        run_job $line
    done
}

# Queues the jobs that must run alone (`queue_jobs alone`) or the others (`queue_jobs others`).
queue_jobs() {
    local line name kind
    for line in "${jobs[@]}"; do
        kind=others
        for name in "${alone[@]}"; do
            [ "$name" != "${line%% *}" ] || kind=alone
        done
        [ "$kind" != "$1" ] || printf '%s\n' "$line" >>"$out/queue"
    done
}

# Phase 1: the jobs that must run alone; phase 2: the others, on the workers.
queue_jobs alone
worker
queue_jobs others
workers=${BALEEN_TEST_WORKERS:-1}
echo "--- $workers worker(s) for the other jobs"
for _ in $(seq "$workers"); do
    worker &
done
wait

# `sed -n 1,15p`, not `head`: head stops reading after 15 lines, and when sort's output is more
# than one pipe write (over 4 KiB: 72 tests) its next write dies of SIGPIPE, which pipefail turns
# into the script's exit status (141, a CI run lost on 2026-11-26 after every job had passed).
echo "slowest tests:"
cat "$out"/*.log | sed -n 's/^test \(.*\) \.\.\. \(.*\) (\([0-9]*\) s)$/\3 s  \1 (\2)/p' |
    sort -rn | sed -n 1,15p

ended=$(cat "$out/ended" 2>/dev/null | wc -l)
if [ "$ended" != "${#jobs[@]}" ]; then
    echo "only $ended of ${#jobs[@]} jobs ended; a worker stopped early (logs in $out)" >&2
    exit 1
fi
if [ -s "$out/failed" ]; then
    echo "failed jobs: $(tr '\n' ' ' <"$out/failed")(logs in $out)" >&2
    exit 1
fi
echo "all ${#jobs[@]} jobs passed"
