#!/bin/sh
# bench/run_proxy.sh - the Redis proxy benchmark of issue 5, in one run:
# redis-benchmark -t get,set with -P 1 and -P 16, -c 50 and -c 500, through
# sample/redis_proxy, through Debian's nutcracker (twemproxy), and straight
# to redis-server, all on one redis-server with the same number of server
# connections (CONNS, default 1: nutcracker's default).  ROUNDS (default 5)
# interleaved rounds, alternating the order; medians of requests/s and of
# each proxy's CPU time (user+system, from /proc) per request, and ratios
# redis_proxy / nutcracker.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-1}
B=build-bench-proxy
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev redis-server redis-tools nutcracker

echo "== build ($B, Release)" >&2
cmake -S . -B "$B" -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=ON -DCMAKE_BUILD_TYPE=Release \
    >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
cmake --build "$B" -j "$JOBS" >>"$B.log" 2>&1 || { tail -50 "$B.log"; exit 1; }

ulimit -n 8192 2>/dev/null || true
TICK=$(getconf CLK_TCK)
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
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$P_REDIS" redis-server
"$B/sample/redis_proxy" --listen "$P_ECO" --backend "127.0.0.1:$P_REDIS" --conns "$CONNS" \
    >"$TMP/eco.log" 2>&1 &
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
nutcracker -c "$TMP/nutcracker.yml" -a 127.0.0.1 -s "$P_NCSTATS" -o "$TMP/nutcracker.log" &
PID_NC=$!
PIDS="$PIDS $!"
wait_port "$P_NC" nutcracker "$TMP/nutcracker.log"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RAW=$TMP/raw.txt
: >"$RAW"
one() { # side port pid P c: appends "side P c test rps" and "side P c cpu us/req"
    n=$((40000 * $4))
    [ "$5" -lt 100 ] || n=$((n * 2))
    c0=0; [ "$3" = - ] || c0=$(cpu_ticks "$3")
    out=$(redis-benchmark -p "$2" -t set,get -P "$4" -c "$5" -n "$n" -q 2>&1 | tr '\r' '\n' |
        grep 'requests per second') || { echo "redis-benchmark failed on port $2" >&2; exit 1; }
    c1=0; [ "$3" = - ] || c1=$(cpu_ticks "$3")
    echo "$out" | awk -v s="$1" -v p="$4" -v c="$5" '{ sub(":", "", $1); print s, p, c, $1, $2 }' >>"$RAW"
    awk -v s="$1" -v p="$4" -v c="$5" -v dc=$((c1 - c0)) -v tick="$TICK" -v n="$n" \
        'BEGIN { print s, p, c, "CPU", dc * 1e6 / tick / (2 * n) }' >>"$RAW"
}

for P in 1 16; do
    for c in 50 500; do
        r=1
        while [ "$r" -le "$ROUNDS" ]; do
            echo "== -P $P -c $c round $r/$ROUNDS" >&2
            if [ $((r % 2)) -eq 1 ]; then
                one redis_proxy "$P_ECO" "$PID_ECO" "$P" "$c"
                one nutcracker "$P_NC" "$PID_NC" "$P" "$c"
            else
                one nutcracker "$P_NC" "$PID_NC" "$P" "$c"
                one redis_proxy "$P_ECO" "$PID_ECO" "$P" "$c"
            fi
            one direct "$P_REDIS" - "$P" "$c"
            r=$((r + 1))
        done
    done
done

median() { sort -g | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2];
                                             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
med() { awk -v s="$1" -v p="$2" -v c="$3" -v t="$4" '$1 == s && $2 == p && $3 == c && $4 == t { print $5 }' "$RAW" | median; }

echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$(redis-server --version | cut -d' ' -f1-3), nutcracker $(nutcracker -V 2>&1 | head -1 | sed 's/.*nutcracker-//'); server connections per proxy: $CONNS; medians of $ROUNDS interleaved rounds."
echo
echo "| -P | -c | test | redis_proxy req/s | nutcracker req/s | ratio | direct req/s | redis_proxy CPU µs/req | nutcracker CPU µs/req | CPU ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for P in 1 16; do
    for c in 50 500; do
        ce=$(med redis_proxy "$P" "$c" CPU)
        cn=$(med nutcracker "$P" "$c" CPU)
        for t in SET GET; do
            e=$(med redis_proxy "$P" "$c" "$t")
            nn=$(med nutcracker "$P" "$c" "$t")
            d=$(med direct "$P" "$c" "$t")
            awk -v P="$P" -v c="$c" -v t="$t" -v e="$e" -v n="$nn" -v d="$d" -v ce="$ce" -v cn="$cn" 'BEGIN {
                printf "| %s | %s | %s | %.0f | %.0f | %.2f | %.0f | %.2f | %.2f | %.2f |\n",
                       P, c, t, e, n, e / n, d, ce, cn, (cn > 0 ? ce / cn : 0) }'
        done
    done
done
echo
echo "CPU µs/req covers the SET and GET runs of a row together."
