#!/bin/sh
# bench/pages_socket.sh - distinct pages each echo server touches between
# two system calls (bench/pages.py says why that counts here): runs
# sample/echo_server and bench/raw_echo_server under valgrind's lackey
# (every memory access traced) while bench/loadgen drives N (default 64)
# connections for 3 s, then summarises each trace.  Deterministic, unlike
# timings; a run takes about a minute.  Needs the build of
# bench/run_socket.sh (build-bench-net).
set -eu
cd "$(dirname "$0")/.."
B=build-bench-net
N=${N:-64}
sh tools/deps.sh valgrind python3 binutils
[ -x "$B/bench/loadgen" ] || { echo "run bench/run_socket.sh first (it builds $B)" >&2; exit 1; }
ulimit -n 8192 2>/dev/null || true
BASE=$((20000 + $$ % 12000))
TMP=$(mktemp -d)
PID=""
cleanup() { [ -z "$PID" ] || kill "$PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

for what in "sample/echo_server eco --port $BASE" "bench/raw_echo_server raw $((BASE + 1))"; do
    set -- $what
    prog=$1 name=$2
    shift 2
    port=$(echo "$@" | awk '{print $NF}')
    valgrind --tool=lackey --trace-mem=yes --log-file="$TMP/$name.trace" \
        "$B/$prog" "$@" >"$TMP/$name.out" 2>&1 &
    PID=$!
    i=0
    until grep -q listening "$TMP/$name.out" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 600 ] || { cat "$TMP/$name.out" >&2; exit 1; }; sleep 0.05
    done
    "$B/bench/loadgen" "$port" "$N" 3 >/dev/null
    cp "/proc/$PID/maps" "$TMP/$name.maps"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    echo "== $prog, N=$N"
    python3 bench/pages.py "$TMP/$name.trace" "$TMP/$name.maps"
done
