#!/bin/sh
# bench/ab_socket.sh - the socket benchmark's two sides run at the same
# time, for comparisons finer than bench/run_socket.sh resolves on a busy
# host.
#
#   sh bench/ab_socket.sh                  sample/echo_server vs bench/raw_echo_server
#   KIND=proxy sh bench/ab_socket.sh       sample/tcp_proxy vs bench/raw_proxy
#   A=old/echo_server B=new/echo_server sh bench/ab_socket.sh
#                                          any two builds of one server (or,
#                                          with KIND=proxy, of one proxy)
#   KIND=bev sh bench/ab_socket.sh         bench/bev_echo co vs bench/bev_echo cb
#                                          (with OLD: co against old co)
#   OLD=456af71 sh bench/ab_socket.sh      this tree (A) against a git ref
#                                          or another source tree (B), both
#                                          built here: A / B is new / old
#
# Both servers (or proxies) run on CPU 1 together, each driven by its own
# bench/loadgen on CPU 0 (N closed-loop connections, 8-byte messages), both
# load generators started together; the proxies share one raw_echo_server
# backend on CPU 0.  Per round, each side's CPU time per round trip
# (on-CPU nanoseconds from /proc/PID/schedstat over its trips) and the
# ratio A / B; per N, the median of the per-round ratios with its quartiles
# and range (which load generator starts first alternates).  ROUNDS
# (default 16) rounds of SECONDS_PER_RUN (default 2) s, NS (default
# "64 1024") connection counts; A and B may be relative to the directory
# the script is started from.
#
# Why at the same time: run one after the other, the host's other load
# moved the per-round ratio of two servers from 0.81 to 1.61 within
# minutes (40 rounds at N = 1024); sharing each moment of it, two copies of
# the same server gave 0.991-1.018 (median 1.002, 20 rounds).  The two
# sides share CPU 1's caches, so the absolute figures are not those of a
# server alone; the ratio is what this is for.
set -eu
# A and B as given, relative to where the script was started.
abspath() { case $1 in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }
[ -z "${A:-}" ] || A=$(abspath "$A")
[ -z "${B:-}" ] || B=$(abspath "$B")
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-16}
SECS=${SECONDS_PER_RUN:-2}
NS=${NS:-"64 1024"}
KIND=${KIND:-server}
case $KIND in
server | proxy | bev) ;;
*) echo "ab_socket.sh: KIND must be server, proxy or bev" >&2; exit 2 ;;
esac
B_DIR=build-bench-net
JOBS=$(nproc 2>/dev/null || echo 2)
[ "$JOBS" -ge 2 ] || { echo "ab_socket.sh: needs two CPUs" >&2; exit 1; }

sh tools/deps.sh build-essential cmake pkg-config libevent-dev python3

echo "== build ($B_DIR, Release)" >&2
cmake -S . -B "$B_DIR" -DECO_BUILD_BENCH=ON -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=ON \
    -DCMAKE_BUILD_TYPE=Release >"$B_DIR.log" 2>&1 || { cat "$B_DIR.log"; exit 1; }
cmake --build "$B_DIR" -j "$JOBS" >>"$B_DIR.log" 2>&1 || { tail -50 "$B_DIR.log"; exit 1; }

# OLD: the same server (or proxy) built from a git ref or a source tree.
if [ -n "${OLD:-}" ]; then
    if [ -d "$OLD" ]; then
        old_src=$(cd "$OLD" && pwd)
    else
        old_src=$B_DIR/old-src
        rm -rf "$old_src" "$B_DIR/old"
        mkdir -p "$old_src"
        git archive "$OLD" | tar -x -C "$old_src"
    fi
    echo "== build $OLD ($B_DIR/old, Release)" >&2
    old_bench=OFF; [ "$KIND" != bev ] || old_bench=ON
    cmake -S "$old_src" -B "$B_DIR/old" -DECO_BUILD_BENCH=$old_bench -DECO_BUILD_TESTS=OFF \
        -DECO_BUILD_SAMPLES=ON -DCMAKE_BUILD_TYPE=Release >"$B_DIR.old.log" 2>&1 &&
        cmake --build "$B_DIR/old" -j "$JOBS" >>"$B_DIR.old.log" 2>&1 || { tail -50 "$B_DIR.old.log"; exit 1; }
    case $KIND in
    proxy) A=$B_DIR/sample/tcp_proxy B=$B_DIR/old/sample/tcp_proxy ;;
    bev) A=$B_DIR/bench/bev_echo B=$B_DIR/old/bench/bev_echo MODE_B=co ;;
    *) A=$B_DIR/sample/echo_server B=$B_DIR/old/sample/echo_server ;;
    esac
fi

ulimit -n 8192 2>/dev/null || true
BASE=$((20000 + $$ % 12000))
P_A=$BASE P_B=$((BASE + 1)) P_BACK=$((BASE + 2))
PIDS=""
cleanup() { [ -z "$PIDS" ] || kill $PIDS 2>/dev/null || true; }
trap cleanup EXIT INT TERM

OUT=$B_DIR
. bench/servers.sh
start_side() { # side binary port: with the arguments that program takes
    case $KIND:$2 in
    proxy:*raw_proxy) start "$1" taskset -c 1 "$2" "$3" "$P_BACK" ;;
    proxy:*) start "$1" taskset -c 1 "$2" --listen "$3" --backend "127.0.0.1:$P_BACK" ;;
    *:*raw_echo_server) start "$1" taskset -c 1 "$2" "$3" ;;
    bev:*) if [ "$1" = A ]; then m=co; else m=${MODE_B:-cb}; fi
        start "$1" taskset -c 1 "$2" "$m" "$3" ;;
    *) start "$1" taskset -c 1 "$2" --port "$3" ;;
    esac
}
if [ "$KIND" = proxy ]; then
    A=${A:-$B_DIR/sample/tcp_proxy} B=${B:-$B_DIR/bench/raw_proxy}
    start back taskset -c 0 "$B_DIR/bench/raw_echo_server" "$P_BACK"
elif [ "$KIND" = bev ]; then
    A=${A:-$B_DIR/bench/bev_echo} B=${B:-$B_DIR/bench/bev_echo}
else
    A=${A:-$B_DIR/sample/echo_server} B=${B:-$B_DIR/bench/raw_echo_server}
fi
start_side A "$A" "$P_A"
start_side B "$B" "$P_B"

trips() { tr ' ' '\n' <"$1" | awk -F= '$1 == "trips" { print $2 }'; }

echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $JOBS cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$KIND: A = $A, B = $B; $ROUNDS rounds of $SECS s, both sides at once"
echo
echo "| N | A CPU ns/rt | B CPU ns/rt | A / B (median of rounds) | quartiles | range |"
echo "|---|---|---|---|---|---|"
for n in $NS; do
    : >"$B_DIR/ab-rounds.txt"
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        echo "== N=$n round $r/$ROUNDS" >&2
        a0=$(oncpu_ns "$PID_A") b0=$(oncpu_ns "$PID_B")
        # Alternate which load generator starts first.
        if [ $((r % 2)) -eq 1 ]; then
            taskset -c 0 "$B_DIR/bench/loadgen" "$P_A" "$n" "$SECS" >"$B_DIR/ab-lg-A.txt" &
            la=$!
            taskset -c 0 "$B_DIR/bench/loadgen" "$P_B" "$n" "$SECS" >"$B_DIR/ab-lg-B.txt" &
            lb=$!
        else
            taskset -c 0 "$B_DIR/bench/loadgen" "$P_B" "$n" "$SECS" >"$B_DIR/ab-lg-B.txt" &
            lb=$!
            taskset -c 0 "$B_DIR/bench/loadgen" "$P_A" "$n" "$SECS" >"$B_DIR/ab-lg-A.txt" &
            la=$!
        fi
        wait $la || { echo "loadgen A failed" >&2; exit 1; }
        wait $lb || { echo "loadgen B failed" >&2; exit 1; }
        a1=$(oncpu_ns "$PID_A") b1=$(oncpu_ns "$PID_B")
        echo "$((a1 - a0)) $(trips "$B_DIR/ab-lg-A.txt") $((b1 - b0)) $(trips "$B_DIR/ab-lg-B.txt")" \
            >>"$B_DIR/ab-rounds.txt"
        r=$((r + 1))
    done
    python3 - "$n" "$B_DIR/ab-rounds.txt" <<'PY'
import statistics as st
import sys
n, path = sys.argv[1], sys.argv[2]
rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
a = [r[0] / r[1] for r in rows if r[1] > 0 and r[3] > 0]
b = [r[2] / r[3] for r in rows if r[1] > 0 and r[3] > 0]
ratio = [x / y for x, y in zip(a, b)]
q = st.quantiles(ratio, n=4) if len(ratio) >= 2 else [ratio[0]] * 3
print(f"| {n} | {st.median(a):.0f} | {st.median(b):.0f} | {st.median(ratio):.3f} | "
      f"{q[0]:.3f}-{q[2]:.3f} | {min(ratio):.3f}-{max(ratio):.3f} |")
PY
done
