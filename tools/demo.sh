#!/bin/sh
# tools/demo.sh - the demo: builds libeco, starts redis-server on a free
# loopback port and sample/redis_proxy in front of it (one coroutine per
# client, 4 shared backend connections), drives redis-benchmark through the
# proxy for a few seconds, prints the results, and stops what it started.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh build-essential cmake pkg-config libevent-dev redis-server redis-tools
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DECO_BUILD_TESTS=OFF >build-demo.log 2>&1 ||
    { cat build-demo.log; exit 1; }
cmake --build build-demo -j "$(nproc)" >>build-demo.log 2>&1 || { tail -50 build-demo.log; exit 1; }

TMP=$(mktemp -d)
PIDS=""
cleanup() { [ -z "$PIDS" ] || { kill $PIDS 2>/dev/null || true; wait 2>/dev/null || true; }; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

# The proxy takes a port the kernel picks (--listen 0); redis-server gets
# one from a range, checked to be free.
port=$((30000 + $$ % 20000))
while redis-cli -p "$port" ping >/dev/null 2>&1; do port=$((port + 1)); done
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS="$!"
i=0
until redis-cli -p "$port" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 200 ] || { cat "$TMP/redis.log"; exit 1; }; sleep 0.05
done
echo "== redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$port (pid $PIDS)"

./build-demo/sample/redis_proxy --listen 0 --backend "127.0.0.1:$port" --conns 4 >"$TMP/proxy.out" 2>&1 &
PIDS="$PIDS $!"
i=0
until grep -q listening "$TMP/proxy.out"; do
    i=$((i + 1)); [ $i -lt 200 ] || { cat "$TMP/proxy.out"; exit 1; }; sleep 0.05
done
pport=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$TMP/proxy.out")
echo "== $(head -1 "$TMP/proxy.out") (pid $!)"

echo "== redis-cli through the proxy"
redis-cli -p "$pport" set demo:greeting "hello from libeco"
redis-cli -p "$pport" get demo:greeting

for p in 1 16; do
    echo "== redis-benchmark -t get,set -c 50 -P $p through the proxy"
    redis-benchmark -p "$pport" -t get,set -c 50 -P "$p" -n $((50000 * p / (p > 1 ? 2 : 1))) -q |
        tr '\r' '\n' | grep 'requests per second'
done
echo "== redis-benchmark -t get,set -c 50 -P 16 straight to redis-server, for comparison"
redis-benchmark -p "$port" -t get,set -c 50 -P 16 -n 400000 -q | tr '\r' '\n' |
    grep 'requests per second'
echo "== stopping redis-server and the proxy (pids: $(echo $PIDS))"
