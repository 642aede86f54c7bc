#!/bin/sh
# bench/run_cores.sh - two cores (issue 15), in one run: three echo servers
# on two threads each,
#   libeco    sample/echo_server --threads 2
#   libevent  bench/raw_echo_server PORT 2 (an event_base per thread)
#   go        bench/go/echo.go with GOMAXPROCS=2
# (both C servers: a listening socket per thread, SO_REUSEPORT), driven by
# bench/loadgen: N closed-loop connections ping-ponging 8-byte messages
# (checked), N in NS (default "64 1024").  ROUNDS (default 5) rounds of
# SECS (default 2) seconds per server, the order rotating each round;
# medians of round trips/s and of the server's CPU time per round trip (all
# its threads), the ratios of libeco to each, and the median of each
# round's own ratio (paired: the steadier figure on a noisy machine).  Unpinned: the servers
# may use both CPUs, and loadgen (one thread) competes with them for those
# same two, as does anything else the machine runs.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-2}
NS=${NS:-"64 1024"}
B=build-bench-net
. bench/servers.sh
net_setup echo_server raw_echo_server loadgen
sh tools/deps.sh golang-go
mkdir -p "$B/go"
GOCACHE=$(pwd)/$B/go/cache GOPATH=$(pwd)/$B/go/path go build -o "$B/go/echo" bench/go/echo.go
start libeco "$B/sample/echo_server" --port "$BASE" --threads 2
start libevent "$B/bench/raw_echo_server" $((BASE + 1)) 2
start go env GOMAXPROCS=2 "$B/go/echo" $((BASE + 2))
port() { case $1 in libeco) echo "$BASE" ;; libevent) echo $((BASE + 1)) ;; go) echo $((BASE + 2)) ;; esac; }

RAW=$B/cores-raw.txt
: >"$RAW"
one() { # side n: one loadgen run, appends "side n round rt_per_s cpu_us_per_rt"
    pid=$(eval echo "\$PID_$1")
    c0=$(oncpu_ns "$pid")
    out=$("$B/bench/loadgen" "$(port "$1")" "$2" "$SECS") || { echo "loadgen failed: $out" >&2; exit 1; }
    c1=$(oncpu_ns "$pid")
    echo "$out" | awk -v s="$1" -v n="$2" -v r="$r" -v dc=$((c1 - c0)) '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { printf "%s %s %s %s %.3f\n", s, n, r, v["round_trips_per_s"], dc / 1000 / (v["trips"] > 0 ? v["trips"] : 1) }' >>"$RAW"
}
for n in $NS; do
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        echo "== N=$n round $r/$ROUNDS" >&2
        case $((r % 3)) in
        1) order="libeco libevent go" ;;
        2) order="libevent go libeco" ;;
        *) order="go libeco libevent" ;;
        esac
        for side in $order; do one "$side" "$n"; done
        r=$((r + 1))
    done
done

med() { awk -v s="$1" -v n="$2" -v f="$3" '$1 == s && $2 == n { print $f }' "$RAW" | median; }
paired() { # peer n: the median over rounds of libeco's rt/s over peer's
    awk -v p="$1" -v n="$2" '$2 == n { v[$1, $3] = $4 } END { for (k in v) { split(k, q, SUBSEP)
        if (q[1] == "libeco" && v[p, q[2]] > 0) print v[k] / v[p, q[2]] } }' "$RAW" | median
}
echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Medians of $ROUNDS rotating runs of ${SECS} s; 8-byte closed-loop ping-pong; two server threads each; unpinned."
echo
echo "| N | libeco rt/s | libevent rt/s | Go rt/s | libeco/libevent (>= 0.95), paired | libeco/Go (>= 1.0), paired | CPU µs/rt libeco, libevent, Go |"
echo "|---|---|---|---|---|---|---|"
for n in $NS; do
    awk -v n="$n" -v e="$(med libeco "$n" 4)" -v l="$(med libevent "$n" 4)" -v g="$(med go "$n" 4)" \
        -v ce="$(med libeco "$n" 5)" -v cl="$(med libevent "$n" 5)" -v cg="$(med go "$n" 5)" \
        -v pl="$(paired libevent "$n")" -v pg="$(paired go "$n")" 'BEGIN {
        printf "| %s | %.0f | %.0f | %.0f | %.3f, %.3f | %.3f, %.3f | %.2f, %.2f, %.2f |\n", n, e, l, g,
               e / l, pl, e / g, pg, ce, cl, cg }'
done
