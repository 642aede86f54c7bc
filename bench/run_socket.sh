#!/bin/sh
# bench/run_socket.sh - the socket benchmark of issue 3, in one run:
#   server  sample/echo_server  vs bench/raw_echo_server (libevent callbacks)
#   proxy   sample/tcp_proxy    vs bench/raw_proxy, both in front of one
#           more bench/raw_echo_server
# bench/loadgen drives each with N closed-loop connections ping-ponging
# 8-byte messages (checked), for N = 2, 4, ... 1024.  For every N the two
# sides run ROUNDS times (default 5), interleaved and alternating which goes
# first; the table shows medians of round trips/s and of the server's (or
# proxy's) CPU time per round trip (on-CPU time from /proc/PID/schedstat),
# and the ratios libeco / libevent, and the median of each round's own CPU
# ratio (the steadier figure on a noisy machine).  SECONDS_PER_RUN
# (default 2) sets each run's length, NS="2 4 ..." the connection counts.
# PIN=1 (the default on two or more CPUs) runs the servers and proxies on
# CPU 1, the load generator and the proxies' backend (its own
# raw_echo_server) on CPU 0: unpinned, where the scheduler puts the
# processes moves the figures by more than the differences measured.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-2}
NS=${NS:-"2 4 8 16 32 64 128 256 512 1024"}
B=build-bench-net

. bench/servers.sh
net_setup
P_ECO=$BASE P_RAW=$((BASE + 1)) P_ECOPROXY=$((BASE + 2)) P_RAWPROXY=$((BASE + 3))
P_BACK=$((BASE + 4))
# shellcheck disable=SC2086 # SRV and LOAD are a command and its options, or nothing
start eco $SRV "$B/sample/echo_server" --port "$P_ECO"
start raw $SRV "$B/bench/raw_echo_server" "$P_RAW"
start back $LOAD "$B/bench/raw_echo_server" "$P_BACK"
start ecoproxy $SRV "$B/sample/tcp_proxy" --listen "$P_ECOPROXY" --backend "127.0.0.1:$P_BACK"
start rawproxy $SRV "$B/bench/raw_proxy" "$P_RAWPROXY" "$P_BACK"

RAW=$B/socket-raw.txt
: >"$RAW"
one() { # kind side port pid n: one loadgen run, appends "kind side n rate cpu_us_per_trip"
    c0=$(oncpu_ns "$4")
    out=$($LOAD "$B/bench/loadgen" "$3" "$5" "$SECS") || { echo "loadgen failed: $out" >&2; exit 1; }
    c1=$(oncpu_ns "$4")
    echo "$out" | awk -v k="$1" -v s="$2" -v n="$5" -v dc=$((c1 - c0)) '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { printf "%s %s %s %s %.3f\n", k, s, n, v["round_trips_per_s"],
              dc / 1000 / (v["trips"] > 0 ? v["trips"] : 1) }' >>"$RAW"
}

for n in $NS; do
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        echo "== N=$n round $r/$ROUNDS" >&2
        if [ $((r % 2)) -eq 1 ]; then
            one server libeco "$P_ECO" "$PID_eco" "$n"
            one server libevent "$P_RAW" "$PID_raw" "$n"
            one proxy libeco "$P_ECOPROXY" "$PID_ecoproxy" "$n"
            one proxy libevent "$P_RAWPROXY" "$PID_rawproxy" "$n"
        else
            one server libevent "$P_RAW" "$PID_raw" "$n"
            one server libeco "$P_ECO" "$PID_eco" "$n"
            one proxy libevent "$P_RAWPROXY" "$PID_rawproxy" "$n"
            one proxy libeco "$P_ECOPROXY" "$PID_ecoproxy" "$n"
        fi
        r=$((r + 1))
    done
done

pick() { awk -v k="$1" -v s="$2" -v n="$3" -v f="$4" '$1 == k && $2 == s && $3 == n { print $f }' "$RAW"; }

echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Medians of $ROUNDS interleaved runs of ${SECS} s each; 8-byte closed-loop ping-pong;"
# (An apostrophe inside ${SRV:+...} in double quotes opens a quote for bash.)
if [ -n "$SRV" ]; then
    echo "$SRV for the servers, $LOAD for the load generator and the proxies' backend."
else
    echo "unpinned."
fi
for kind in server proxy; do
    echo
    echo "### $kind"
    echo
    echo "| N | libeco rt/s | libevent rt/s | ratio | libeco CPU µs/rt | libevent CPU µs/rt | CPU ratio | paired CPU ratio |"
    echo "|---|---|---|---|---|---|---|---|"
    for n in $NS; do
        re=$(pick $kind libeco "$n" 4 | median)
        rr=$(pick $kind libevent "$n" 4 | median)
        ce=$(pick $kind libeco "$n" 5 | median)
        cr=$(pick $kind libevent "$n" 5 | median)
        # The k-th libeco run of a round against the k-th libevent run.
        pick $kind libevent "$n" 5 >"$B/socket-pair.txt"
        pr=$(pick $kind libeco "$n" 5 | paste - "$B/socket-pair.txt" |
             awk '$2 > 0 { print $1 / $2 }' | median)
        awk -v n="$n" -v re="$re" -v rr="$rr" -v ce="$ce" -v cr="$cr" -v pr="$pr" 'BEGIN {
            printf "| %s | %.0f | %.0f | %.3f | %.2f | %.2f | %.3f | %.3f |\n", n, re, rr, re / rr, ce, cr,
                   (cr > 0 ? ce / cr : 0), pr }'
    done
done
