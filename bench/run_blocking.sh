#!/bin/sh
# bench/run_blocking.sh - eco_run_blocking's round trip (park, run a no-op
# on a pool thread, resume) beside a plain pool of 4 threads with a mutex
# and condition variables, with 1 and 4 callers (coroutines of one runtime;
# plain threads for the peer).  Builds a Release tree in
# build-bench-blocking/, runs ROUNDS (default 7) interleaved rounds, each
# program reporting the median of REPS (5) repetitions of N (20,000) calls,
# and prints the medians over rounds (wall time and CPU time per call, the
# latter summed over all threads), their min-max and the ratio
# libeco / plain (below 1: libeco is faster or cheaper).
#
#   bench/run_blocking.sh        ROUNDS=3 N=5000 bench/run_blocking.sh
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-7}
N=${N:-20000}
REPS=${REPS:-5}
B=build-bench-blocking

sh tools/deps.sh build-essential cmake pkg-config libevent-dev
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DECO_BUILD_BENCH=ON -DECO_BUILD_TESTS=OFF \
    -DECO_BUILD_SAMPLES=OFF >$B.log 2>&1 || { cat $B.log; exit 1; }
cmake --build $B -j "$(nproc)" --target bench_blocking >>$B.log 2>&1 || { tail -30 $B.log; exit 1; }
BIN=$B/bench/bench_blocking
RAW=$B/blocking-raw.txt
: >$RAW
r=1
while [ $r -le "$ROUNDS" ]; do
    echo "== round $r/$ROUNDS" >&2
    for c in 1 4; do
        # Alternate who goes first, so drift hits both alike.
        if [ $((r % 2)) -eq 1 ]; then order="eco cond"; else order="cond eco"; fi
        for m in $order; do
            "$BIN" "$m" "$c" "$N" "$REPS" | grep '^RESULT' >>$RAW
        done
    done
    r=$((r + 1))
done

med() {
    awk -v k="$1" '$2 == k { print $3 }' $RAW | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
span() {
    awk -v k="$1" '$2 == k { print $3 }' $RAW | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.0f–%.0f", v[1], v[NR] }'
}
paired() { # median over rounds of each round's own ratio
    awk -v a="$1" -v b="$2" '$2 == a { x[++na] = $3 } $2 == b { y[++nb] = $3 }
        END { for (i = 1; i <= na && i <= nb; i++) print x[i] / y[i] }' $RAW | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.2f (%.2f–%.2f)", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'
}

echo "Command: \`bench/run_blocking.sh\` (ROUNDS=$ROUNDS interleaved rounds, N=$N calls, REPS=$REPS)."
echo
echo "Machine: Linux $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores,"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(cc --version | head -1); $(date -u '+%Y-%m-%d %H:%M UTC')."
echo
echo "| callers | measure | eco_run_blocking | plain pool | ratio libeco/plain, paired per round |"
echo "|---|---|---|---|---|"
for c in 1 4; do
    for m in ns cpu_ns; do
        k=blocking_eco_${c}_$m p=blocking_cond_${c}_$m
        if [ $m = ns ]; then what="wall ns/call"; else what="CPU ns/call, all threads"; fi
        echo "| $c | $what | $(med $k) ($(span $k)) | $(med $p) ($(span $p)) | $(paired $k $p) |"
    done
done
