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

# On-CPU nanoseconds (user and system) of process $1, summed over its
# threads (the samples have a main thread besides the ones that serve):
# /proc/PID/stat's ticks are 10 ms, a few per cent of a run of a second or
# two.  A thread that exits takes its time with it; the servers' stay.
oncpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { print s }'; }

# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2];
                                             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
