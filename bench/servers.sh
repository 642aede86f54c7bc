# shellcheck shell=sh
# bench/servers.sh - sourced by the socket and proxy benchmarks (from the
# repository's root): starting the servers they measure, and reading a
# process's CPU time.  The caller sets OUT, where each server's output goes,
# and PIDS, which its cleanup kills.

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

# On-CPU nanoseconds (user and system) of process $1: /proc/PID/stat's
# ticks are 10 ms, a few per cent of a run of a second or two.
oncpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }
