#!/bin/sh
# bench/syscalls_socket.sh - system calls per round trip of each server in
# the socket benchmark (issue 3): strace -c -f attached to sample/echo_server,
# bench/raw_echo_server, sample/tcp_proxy and bench/raw_proxy while
# bench/loadgen runs N (default 64) connections for a few seconds.  strace
# slows everything down; the counts per round trip are what to compare.
# Needs the build of bench/run_socket.sh (build-bench-net).
set -eu
cd "$(dirname "$0")/.."
B=build-bench-net
N=${N:-64}
sh tools/deps.sh strace
[ -x "$B/bench/loadgen" ] || { echo "run bench/run_socket.sh first (it builds $B)" >&2; exit 1; }
BASE=$((20000 + $$ % 12000))
TMP=$(mktemp -d)
PIDS=""
cleanup() { [ -z "$PIDS" ] || { kill $PIDS 2>/dev/null || true; wait 2>/dev/null || true; }; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
OUT=$TMP
. bench/servers.sh
start eco "$B/sample/echo_server" --port "$BASE"
start raw "$B/bench/raw_echo_server" $((BASE + 1))
start ecoproxy "$B/sample/tcp_proxy" --listen $((BASE + 2)) --backend "127.0.0.1:$((BASE + 1))"
start rawproxy "$B/bench/raw_proxy" $((BASE + 3)) $((BASE + 1))

echo "| program | round trips | read/rt | sendto/rt | epoll_wait/rt | epoll_ctl/rt | all syscalls/rt |"
echo "|---|---|---|---|---|---|---|"
for what in "sample/echo_server eco $BASE" "raw_echo_server raw $((BASE + 1))" \
    "sample/tcp_proxy ecoproxy $((BASE + 2))" "raw_proxy rawproxy $((BASE + 3))"; do
    set -- $what
    pid=$(eval echo "\$PID_$2")
    strace -c -f -p "$pid" -o "$TMP/strace.$2" &
    spid=$!
    sleep 0.5
    trips=$("$B/bench/loadgen" "$3" "$N" 3 | sed 's/.*trips=\([0-9]*\).*/\1/')
    sleep 0.3
    kill -INT $spid
    wait $spid 2>/dev/null || true
    awk -v p="$1" -v t="$trips" '
        $NF == "read" { r = $4 } $NF == "sendto" { s = $4 } $NF == "epoll_wait" { w = $4 }
        $NF == "epoll_ctl" { c = $4 } $NF == "total" { a = $4 }
        END { printf "| %s | %d | %.3f | %.3f | %.3f | %.4f | %.3f |\n", p, t, r / t, s / t, w / t,
              c / t, a / t }' "$TMP/strace.$2"
done
