#!/bin/sh
# bench/run_bev.sh - bufferevent echo (issue 14): bench/bev_echo co (a
# coroutine per connection, eco_bev_read / eco_bev_write) against
# bench/bev_echo cb (the same server with bufferevent callbacks), both
# driven by bench/loadgen (N closed-loop connections, 8-byte messages,
# checked).  For each N the two run ROUNDS times (default 5), interleaved,
# alternating which goes first; the table shows medians of round trips/s
# and of the server's on-CPU time per round trip, and their ratios.
# SECONDS_PER_RUN (default 2), NS (default "64 1024").  PIN=1 (default on
# two or more CPUs): servers on CPU 1, the load generator on CPU 0.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-2}
NS=${NS:-"64 1024"}
B=build-bench-net
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev

echo "== build ($B, Release)" >&2
cmake -S . -B "$B" -DECO_BUILD_BENCH=ON -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=ON \
    -DCMAKE_BUILD_TYPE=Release >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
cmake --build "$B" -j "$JOBS" --target bev_echo loadgen >>"$B.log" 2>&1 ||
    { tail -50 "$B.log"; exit 1; }

ulimit -n 8192 2>/dev/null || true
BASE=$((20000 + $$ % 12000))
P_CO=$BASE P_CB=$((BASE + 1))
PIN=${PIN:-1}
SRV="" LOAD=""
if [ "$PIN" = 1 ] && [ "$JOBS" -ge 2 ] && command -v taskset >/dev/null; then
    SRV="taskset -c 1" LOAD="taskset -c 0"
fi
PIDS=""
cleanup() { [ -z "$PIDS" ] || kill $PIDS 2>/dev/null || true; }
trap cleanup EXIT INT TERM

OUT=$B
. bench/servers.sh
# shellcheck disable=SC2086
start co $SRV "$B/bench/bev_echo" co "$P_CO"
start cb $SRV "$B/bench/bev_echo" cb "$P_CB"

RAW=$B/bev-raw.txt
: >"$RAW"
one() { # side port pid n
    c0=$(oncpu_ns "$3")
    out=$($LOAD "$B/bench/loadgen" "$2" "$4" "$SECS") || { echo "loadgen failed: $out" >&2; exit 1; }
    c1=$(oncpu_ns "$3")
    echo "$out" | awk -v s="$1" -v n="$4" -v dc=$((c1 - c0)) '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { printf "%s %s %s %.3f\n", s, n, v["round_trips_per_s"],
              dc / 1000 / (v["trips"] > 0 ? v["trips"] : 1) }' >>"$RAW"
}

for n in $NS; do
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        echo "== N=$n round $r/$ROUNDS" >&2
        if [ $((r % 2)) -eq 1 ]; then
            one co "$P_CO" "$PID_co" "$n"; one cb "$P_CB" "$PID_cb" "$n"
        else
            one cb "$P_CB" "$PID_cb" "$n"; one co "$P_CO" "$PID_co" "$n"
        fi
        r=$((r + 1))
    done
done

median() { sort -g | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2];
                                             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
pick() { awk -v s="$1" -v n="$2" -v f="$3" '$1 == s && $2 == n { print $f }' "$RAW"; }

echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Medians of $ROUNDS interleaved runs of ${SECS} s each; 8-byte closed-loop ping-pong${SRV:+; servers on CPU 1, load on CPU 0}."
echo
echo "| N | coroutine rt/s | callbacks rt/s | ratio (target >= 0.95) | coroutine CPU µs/rt | callbacks CPU µs/rt | CPU ratio |"
echo "|---|---|---|---|---|---|---|"
for n in $NS; do
    re=$(pick co "$n" 3 | median)
    rr=$(pick cb "$n" 3 | median)
    ce=$(pick co "$n" 4 | median)
    cr=$(pick cb "$n" 4 | median)
    awk -v n="$n" -v re="$re" -v rr="$rr" -v ce="$ce" -v cr="$cr" 'BEGIN {
        printf "| %s | %.0f | %.0f | %.3f | %.2f | %.2f | %.3f |\n", n, re, rr, re / rr, ce, cr,
               (cr > 0 ? ce / cr : 0) }'
done
