#!/bin/sh
# bench/run_proxy.sh - the Redis proxy benchmark of issue 5, in one run:
# redis-benchmark -t get,set with -P 1 and -P 16, -c 50 and -c 500, through
# sample/redis_proxy, through Debian's nutcracker (twemproxy), and straight
# to redis-server, all on one redis-server with the same number of server
# connections (CONNS, default 1: nutcracker's default).  ROUNDS (default 7)
# interleaved rounds, rotating the order; medians of requests/s, of the p50
# latency redis-benchmark reports and of each proxy's CPU time per request,
# and ratios redis_proxy / nutcracker.
#
# Method, the same for all three sides:
# - PIN=1 (default, needs 2 or more CPUs): redis-benchmark runs on the first
#   CPU, redis-server and the proxies on the second.  Left to the scheduler,
#   the three processes land on two cores differently from run to run and
#   the same -P 1 row spread from 42,000 to 100,000 requests/s for either
#   proxy; PIN=0 leaves the placement to the scheduler.
# - CPU time is the process's on-CPU time from /proc/PID/schedstat
#   (nanoseconds), not /proc/PID/stat, whose ticks are sampled at 250 Hz and
#   were off by about 10 % on a run of a second.
# - Other load: before each run the script waits (up to QUIET_WAIT seconds,
#   default 300) for the machine to be idle, and a run during which other
#   processes used more than FOREIGN_MAX percent (default 10) of the
#   machine is repeated, up to 3 times; the last try is kept and the worst
#   such share kept is printed per row.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-7}
CONNS=${CONNS:-1}
PIN=${PIN:-1}
QUIET_WAIT=${QUIET_WAIT:-300}
FOREIGN_MAX=${FOREIGN_MAX:-10}
B=build-bench-proxy
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev redis-server redis-tools nutcracker

echo "== build ($B, Release)" >&2
cmake -S . -B "$B" -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=ON -DCMAKE_BUILD_TYPE=Release \
    >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
cmake --build "$B" -j "$JOBS" >>"$B.log" 2>&1 || { tail -50 "$B.log"; exit 1; }

[ "$JOBS" -ge 2 ] || PIN=0
if [ "$PIN" = 1 ]; then
    ON_CLIENT="taskset -c 0" ON_SERVER="taskset -c 1"
else
    ON_CLIENT="" ON_SERVER=""
fi

ulimit -n 8192 2>/dev/null || true
# Below the ephemeral range (32768 up), where a client socket may sit.
BASE=$((20000 + $$ % 12000))
P_REDIS=$BASE P_ECO=$((BASE + 1)) P_NC=$((BASE + 2)) P_NCSTATS=$((BASE + 3))
TMP=$(mktemp -d)
PIDS=""
cleanup() { [ -z "$PIDS" ] || { kill $PIDS 2>/dev/null || true; wait 2>/dev/null || true; }; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

wait_port() { # port what [log]
    i=0
    until redis-cli -p "$1" ping >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 200 ] || { echo "$2 did not start" >&2; cat "${3:-/dev/null}" >&2; exit 1; }
        sleep 0.05
    done
}
$ON_SERVER redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
    >"$TMP/redis.log" 2>&1 &
PID_REDIS=$!
PIDS="$PIDS $!"
wait_port "$P_REDIS" redis-server
$ON_SERVER "$B/sample/redis_proxy" --listen "$P_ECO" --backend "127.0.0.1:$P_REDIS" \
    --conns "$CONNS" >"$TMP/eco.log" 2>&1 &
PID_ECO=$!
PIDS="$PIDS $!"
wait_port "$P_ECO" redis_proxy
cat >"$TMP/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:$P_NC
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: $CONNS
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:$P_REDIS:1
YML
$ON_SERVER nutcracker -c "$TMP/nutcracker.yml" -a 127.0.0.1 -s "$P_NCSTATS" \
    -o "$TMP/nutcracker.log" &
PID_NC=$!
PIDS="$PIDS $!"
wait_port "$P_NC" nutcracker "$TMP/nutcracker.log"

. bench/servers.sh # oncpu_ns
# Busy and total time of the whole machine, in ms, from /proc/stat.
machine_ms() { awk -v t="$(getconf CLK_TCK)" '/^cpu / {
    print ($2 + $3 + $4 + $7 + $8 + $9) * 1000 / t, ($2 + $3 + $4 + $5 + $6 + $7 + $8 + $9) * 1000 / t }' /proc/stat; }
# CPU ms of this shell's finished children (redis-benchmark and its pipe),
# from what `times >"$TMP/times"` wrote: times must run in this shell, not
# in a $(...) or pipe subshell, which has no finished children.
children_ms() { awk 'NR == 2 { split($1, u, "[ms]"); split($2, s, "[ms]");
    print (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000 }' "$TMP/times"; }
quiet() { # waits until less than 5 % of the machine is busy
    i=0
    while :; do
        m0=$(machine_ms); sleep 0.5; m1=$(machine_ms)
        echo "$m0 $m1" | awk '{ exit !(($3 - $1) < 0.05 * ($4 - $2)) }' && return 0
        i=$((i + 1))
        [ $i -lt $((QUIET_WAIT * 2)) ] || { echo "machine still busy; measuring anyway" >&2; return 0; }
        [ $i -ne 1 ] || echo "waiting for other processes to finish" >&2
    done
}

RAW=$TMP/raw.txt
: >"$RAW"
one() { # side port pid P c: appends "side P c test rps p50", "... CPU us/req", "... FOREIGN %"
    # Long enough at -P 1 to average over the scheduler's moods.
    n=$(($4 == 1 ? 100000 : 40000 * $4))
    [ "$5" -lt 100 ] || n=$((n * 2))
    try=1
    while :; do
        quiet
        c0=0; [ "$3" = - ] || c0=$(oncpu_ns "$3")
        r0=$(oncpu_ns "$PID_REDIS"); m0=$(machine_ms); times >"$TMP/times"; k0=$(children_ms)
        out=$($ON_CLIENT redis-benchmark -p "$2" -t set,get -P "$4" -c "$5" -n "$n" -q 2>&1 |
            tr '\r' '\n' | grep 'requests per second') ||
            { echo "redis-benchmark failed on port $2" >&2; exit 1; }
        c1=0; [ "$3" = - ] || c1=$(oncpu_ns "$3")
        r1=$(oncpu_ns "$PID_REDIS"); m1=$(machine_ms); times >"$TMP/times"; k1=$(children_ms)
        # What the machine did beyond redis-benchmark, redis-server and the
        # proxy measured (the idle proxy costs nothing).
        foreign=$(echo "$m0 $m1" | awk -v ours="$(((c1 - c0 + r1 - r0) / 1000000))" \
            -v k="$(echo "$k0 $k1" | awk '{print $2 - $1}')" \
            '{ f = ($3 - $1) - ours - k; if (f < 0) f = 0; printf "%.0f", 100 * f / ($4 - $2) }')
        if [ "$foreign" -le "$FOREIGN_MAX" ] || [ $try -ge 3 ]; then
            break
        fi
        echo "   other processes took $foreign % of the machine; again" >&2
        try=$((try + 1))
    done
    echo "$out" | awk -v s="$1" -v p="$4" -v c="$5" '{ sub(":", "", $1); l = $(NF - 1);
        sub("p50=", "", l); print s, p, c, $1, $2; print s, p, c, $1 "_p50", l }' >>"$RAW"
    awk -v s="$1" -v p="$4" -v c="$5" -v dc=$((c1 - c0)) -v n="$n" -v f="$foreign" \
        'BEGIN { print s, p, c, "CPU", dc / 1000 / (2 * n); print s, p, c, "FOREIGN", f }' >>"$RAW"
}

for P in 1 16; do
    for c in 50 500; do
        r=1
        while [ "$r" -le "$ROUNDS" ]; do
            echo "== -P $P -c $c round $r/$ROUNDS" >&2
            case $((r % 3)) in
            1) one redis_proxy "$P_ECO" "$PID_ECO" "$P" "$c"
               one nutcracker "$P_NC" "$PID_NC" "$P" "$c"
               one direct "$P_REDIS" - "$P" "$c" ;;
            2) one nutcracker "$P_NC" "$PID_NC" "$P" "$c"
               one direct "$P_REDIS" - "$P" "$c"
               one redis_proxy "$P_ECO" "$PID_ECO" "$P" "$c" ;;
            0) one direct "$P_REDIS" - "$P" "$c"
               one redis_proxy "$P_ECO" "$PID_ECO" "$P" "$c"
               one nutcracker "$P_NC" "$PID_NC" "$P" "$c" ;;
            esac
            r=$((r + 1))
        done
    done
done

median() { sort -g | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2];
                                             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
med() { awk -v s="$1" -v p="$2" -v c="$3" -v t="$4" '$1 == s && $2 == p && $3 == c && $4 == t { print $5 }' "$RAW" | median; }
worst() { awk -v p="$1" -v c="$2" '$2 == p && $3 == c && $4 == "FOREIGN" && $5 > m { m = $5 } END { print m + 0 }' "$RAW"; }

echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$(redis-server --version | cut -d' ' -f1-3), nutcracker $(nutcracker -V 2>&1 | head -1 | sed 's/.*nutcracker-//'); server connections per proxy: $CONNS; medians of $ROUNDS interleaved rounds; PIN=$PIN."
echo
echo "| -P | -c | test | redis_proxy req/s | nutcracker req/s | ratio | direct req/s | redis_proxy p50 ms | nutcracker p50 ms | direct p50 ms | redis_proxy CPU µs/req | nutcracker CPU µs/req | CPU ratio | other load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for P in 1 16; do
    for c in 50 500; do
        ce=$(med redis_proxy "$P" "$c" CPU)
        cn=$(med nutcracker "$P" "$c" CPU)
        fw=$(worst "$P" "$c")
        for t in SET GET; do
            e=$(med redis_proxy "$P" "$c" "$t")
            nn=$(med nutcracker "$P" "$c" "$t")
            d=$(med direct "$P" "$c" "$t")
            le=$(med redis_proxy "$P" "$c" "${t}_p50")
            ln=$(med nutcracker "$P" "$c" "${t}_p50")
            ld=$(med direct "$P" "$c" "${t}_p50")
            awk -v P="$P" -v c="$c" -v t="$t" -v e="$e" -v n="$nn" -v d="$d" -v ce="$ce" -v cn="$cn" \
                -v le="$le" -v ln="$ln" -v ld="$ld" -v fw="$fw" 'BEGIN {
                printf "| %s | %s | %s | %.0f | %.0f | %.2f | %.0f | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f | ≤ %d %% |\n",
                       P, c, t, e, n, e / n, d, le, ln, ld, ce, cn, (cn > 0 ? ce / cn : 0), fw }'
        done
    done
done
echo
echo "CPU µs/req covers the SET and GET runs of a row together; other load: the largest share of"
echo "the machine that other processes took during a run kept for that row."
