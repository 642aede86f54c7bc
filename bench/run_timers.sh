#!/bin/sh
# bench/run_timers.sh - bounded waits at scale (issue 15), in one run:
#   run      bench_timers: N (100,000) coroutines x K (10) random 1-100 ms
#            sleeps, against bench/go/timers.go (GOMAXPROCS=1), with the
#            default stacks and with SMALL_KB (16) KiB stacks; CPU, wall,
#            worst overshoot; ROUNDS (default 3) interleaved rounds
#   pending  CPU per sleep of 1,000 active coroutines while P others are
#            parked in long sleeps, P = 1,000, 100,000 and 1,000,000 (PMAX):
#            does a timer cost more when many are pending?
# Medians and ratios as a Markdown report (also in build-bench-timers/).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
N=${N:-100000}
K=${K:-10}
SMALL_KB=${SMALL_KB:-16}
PMAX=${PMAX:-1000000}
B=build-bench-timers
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev golang-go

echo "== build ($B, Release)" >&2
cmake -S . -B "$B" -DECO_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release -DECO_BUILD_TESTS=OFF \
    -DECO_BUILD_SAMPLES=OFF >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
cmake --build "$B" -j "$JOBS" --target bench_timers >>"$B.log" 2>&1 || { tail -30 "$B.log"; exit 1; }
mkdir -p "$B/go"
GOCACHE=$(pwd)/$B/go/cache GOPATH=$(pwd)/$B/go/path go build -o "$B/go/timers" bench/go/timers.go

RAW=$B/raw.txt
: >"$RAW"
run() { # tag program args...: its RESULT lines, tagged, into RAW
    tag=$1; shift
    out=$("$@") || { echo "failed: $*" >&2; exit 1; }
    printf '%s\n' "$out" | awk -v t="$tag" '$1 == "RESULT" { print t, $2, $3 }' >>"$RAW"
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "== run, round $r/$ROUNDS" >&2
    if [ $((r % 2)) -eq 1 ]; then
        run eco "$B/bench/bench_timers" run "$N" "$K"
        run go env GOMAXPROCS=1 "$B/go/timers" "$N" "$K"
        run small "$B/bench/bench_timers" run "$N" "$K" "$SMALL_KB"
    else
        run small "$B/bench/bench_timers" run "$N" "$K" "$SMALL_KB"
        run go env GOMAXPROCS=1 "$B/go/timers" "$N" "$K"
        run eco "$B/bench/bench_timers" run "$N" "$K"
    fi
    r=$((r + 1))
done
for p in 1000 100000 "$PMAX"; do
    echo "== pending $p" >&2
    run "p$p" "$B/bench/bench_timers" pending "$p"
done

med() { # tag key -> median
    awk -v t="$1" -v k="$2" '$1 == t && $2 == k { print $3 }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "nan";
             else printf "%.2f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
REPORT=$B/timers-report.md
{
    echo "Machine: $(uname -r), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs;"
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $ROUNDS rounds, medians."
    echo
    echo "| $N x $K sleeps | libeco, default stacks | libeco, $SMALL_KB KiB stacks | Go 1.19, GOMAXPROCS=1 | libeco/Go (default, $SMALL_KB KiB) |"
    echo "|---|---|---|---|---|"
    for k in cpu_s user_s sys_s wall_s worst_overshoot_ms; do
        e=$(med eco $k); s=$(med small $k); g=$(med go $k)
        echo "| $k | $e | $s | $g | $(ratio "$e" "$g"), $(ratio "$s" "$g") |"
    done
    echo
    echo "| pending sleepers | CPU ns per sleep of the active ones |"
    echo "|---|---|"
    for p in 1000 100000 "$PMAX"; do echo "| $p | $(med "p$p" cpu_ns_per_sleep) |"; done
} >"$REPORT"
cat "$REPORT"
