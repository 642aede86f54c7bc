#!/bin/sh
# bench/run_short.sh - short connections (issue 15), in one run:
# sample/echo_server against bench/raw_echo_server (libevent callbacks),
# each driven by bench/loadgen in "short" mode: CONC (default 1000) slots,
# each opening a connection, doing one 8-byte round trip (checked), closing,
# and opening the next.  ROUNDS (default 5) interleaved rounds of SECS
# (default 2) seconds per server, alternating which goes first; medians of
# connections/s and of the server's CPU time per connection (all its
# threads, /proc/PID/task/*/schedstat), the ratios libeco / libevent, and
# the median of each round's own CPU ratio; and the server's minor page
# faults per connection (/proc/PID/stat: a fault costs 5-40 us here).  TIME_WAIT: the client closes
# first; loadgen spreads its connections over 64 source addresses
# 127.0.0.2-65 (and Linux reuses loopback TIME_WAIT ports after a second).
# PIN=1 (the default on two or more CPUs): servers on CPU 1, loadgen on 0.
# TOGETHER=1 (the default) drives both servers at the same time, as
# ab_socket.sh does: the host's load then hits both alike, and neither
# server idles between its rounds (an idle second lets libeco's stack pool
# give its stacks back, and the next round faults them in again: 0.2-0.5
# minor faults per connection that a steady server does not see).
# TOGETHER=0 runs them one after the other.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
TOGETHER=${TOGETHER:-1}
SECS=${SECS:-2}
CONC=${CONC:-1000}
B=build-bench-net
. bench/servers.sh
net_setup echo_server raw_echo_server loadgen
P_ECO=$BASE P_RAW=$((BASE + 1))
# shellcheck disable=SC2086 # SRV and LOAD are a command and its options, or nothing
start eco $SRV "$B/sample/echo_server" --port "$P_ECO"
# shellcheck disable=SC2086
start raw $SRV "$B/bench/raw_echo_server" "$P_RAW"

RAW=$B/short-raw.txt
: >"$RAW"
minflt() { awk '{ print $10 }' "/proc/$1/stat"; }
one() { # side port pid: one loadgen run, appends "side round conns_per_s cpu_us_per_conn faults_per_conn"
    c0=$(oncpu_ns "$3") f0=$(minflt "$3")
    out=$($LOAD "$B/bench/loadgen" "$2" "$CONC" "$SECS" short) ||
        { echo "loadgen failed: $out" >&2; exit 1; }
    c1=$(oncpu_ns "$3") f1=$(minflt "$3")
    echo "$out" | awk -v s="$1" -v r="$r" -v dc=$((c1 - c0)) -v df=$((f1 - f0)) '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { c = v["conns"] > 0 ? v["conns"] : 1
              printf "%s %s %s %.3f %.3f\n", s, r, v["conns_per_s"], dc / 1000 / c, df / c }' >>"$RAW"
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "== round $r/$ROUNDS" >&2
    if [ "$TOGETHER" = 1 ]; then
        one libeco "$P_ECO" "$PID_eco" &
        a=$!
        one libevent "$P_RAW" "$PID_raw" &
        b=$!
        wait "$a" || exit 1
        wait "$b" || exit 1
    elif [ $((r % 2)) -eq 1 ]; then
        one libeco "$P_ECO" "$PID_eco"; one libevent "$P_RAW" "$PID_raw"
    else
        one libevent "$P_RAW" "$PID_raw"; one libeco "$P_ECO" "$PID_eco"
    fi
    r=$((r + 1))
done

col() { awk -v s="$1" -v f="$2" '$1 == s { print $f }' "$RAW"; }
re=$(col libeco 3 | median) rr=$(col libevent 3 | median)
ce=$(col libeco 4 | median) cr=$(col libevent 4 | median)
fe=$(col libeco 5 | median) fr=$(col libevent 5 | median)
pr=$(awk '{ c[$1, $2] = $4 } END { for (k in c) { split(k, p, SUBSEP)
          if (p[1] == "libeco" && c["libevent", p[2]] > 0) print c[k] / c["libevent", p[2]] } }' "$RAW" | median)
echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Medians of $ROUNDS rounds of ${SECS} s (both servers at once: $TOGETHER); $CONC connections in flight, one 8-byte round trip each;"
echo "${SRV:-unpinned}${SRV:+ for the servers, $LOAD for loadgen}."
echo
echo "| | libeco echo_server | raw libevent | libeco / libevent | target |"
echo "|---|---|---|---|---|"
awk -v re="$re" -v rr="$rr" -v ce="$ce" -v cr="$cr" -v pr="$pr" -v fe="$fe" -v fr="$fr" 'BEGIN {
    printf "| connections/s | %.0f | %.0f | %.3f | >= 0.95 |\n", re, rr, re / rr
    printf "| server CPU µs/connection | %.1f | %.1f | %.3f (paired %.3f) | <= 1.05 |\n", ce, cr, ce / cr, pr
    printf "| server minor faults/connection | %.2f | %.2f | | |\n", fe, fr }'
