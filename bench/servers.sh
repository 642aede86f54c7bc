# shellcheck shell=sh
# bench/servers.sh - sourced by the socket and proxy benchmarks (from the
# repository's root): starting the servers they measure, and reading a
# process's CPU time.  The caller sets OUT, where each server's output goes,
# and PIDS, which its cleanup kills (or has net_setup set both).

# net_setup [TARGET...]: what the socket benchmarks do first.  Builds the
# targets (all without any) in $B, Release with samples and benchmarks;
# raises the fd limit; sets BASE, a first port below the ephemeral range
# (32768 up, where a client socket may sit); with PIN=1 (the default on two
# or more CPUs) sets SRV="taskset -c 1" for the servers and LOAD="taskset
# -c 0" for the load, else both empty; kills the servers started on exit.
net_setup() {
    sh tools/deps.sh build-essential cmake pkg-config libevent-dev
    echo "== build ($B, Release)" >&2
    cmake -S . -B "$B" -DECO_BUILD_BENCH=ON -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=ON \
        -DCMAKE_BUILD_TYPE=Release >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
    set -- ${1:+--target} "$@"
    cmake --build "$B" -j "$(nproc 2>/dev/null || echo 2)" "$@" >>"$B.log" 2>&1 ||
        { tail -50 "$B.log"; exit 1; }
    ulimit -n 8192 2>/dev/null || true
    BASE=$((20000 + $$ % 12000))
    SRV="" LOAD=""
    if [ "${PIN:-1}" = 1 ] && [ "$(nproc 2>/dev/null || echo 1)" -ge 2 ] &&
        command -v taskset >/dev/null; then
        SRV="taskset -c 1" LOAD="taskset -c 0"
    fi
    OUT=$B PIDS=""
    trap '[ -z "$PIDS" ] || kill $PIDS 2>/dev/null || true' EXIT INT TERM
}

# name command...: runs command in the background and waits for its
# "listening" line; sets PID_name.
start() {
    name=$1; shift
    "$@" >"$OUT/$name.out" 2>&1 &
    PIDS="$PIDS $!"
    eval "PID_$name=$!"
    i=0
    until grep -q listening "$OUT/$name.out" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "$name did not start:" >&2; cat "$OUT/$name.out" >&2; exit 1; }
        sleep 0.05
    done
}

# On-CPU nanoseconds (user and system) of process $1, summed over its
# threads (the samples have a main thread besides the ones that serve):
# /proc/PID/stat's ticks are 10 ms, a few per cent of a run of a second or
# two.  A thread that exits takes its time with it; the servers' stay.
oncpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2];
                                             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
