#!/bin/sh
# bench/run_stacks.sh - stacks at scale (issue 15), in one run:
#   spawn     bench_spawn (create+resume+finish+join, warm pool, ns/op),
#             OLD (a git ref, default main) against this tree, interleaved
#   burst     bench_burst: N (100,000) coroutines started with eco_go, each
#             parks once: the first burst, the same again at once, and one
#             after the pool was trimmed; wall and CPU ns per coroutine,
#             how long the loop runs on after the burst, OLD against new
#   syscalls  memory system calls (strace -f -c) of one process that starts
#             and finishes the burst and then runs its loop until idle, and
#             of one that does that twice, OLD against new
#   million   bench_million against bench/go/million.go (GOMAXPROCS=1):
#             M (1,000,000) parked in a sleep, with the default stack size
#             and with SMALL_KB (16) KiB stacks, then on a channel; seconds
#             to start them all, resident and page-table bytes each, teardown
# ROUNDS (default 5) interleaved rounds of spawn and burst, MROUNDS (3) of
# the million in sleep mode and one in chan mode; medians, and ratios
# new/old and libeco/Go, as a Markdown report (also in build-bench-stacks/).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
MROUNDS=${MROUNDS:-3}
N=${N:-100000}
M=${M:-1000000}
OLD=${OLD:-main}
B=build-bench-stacks
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev golang-go strace valgrind

lib() { # source dir, build dir: a Release libeco.a
    cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DECO_BUILD_TESTS=OFF \
        -DECO_BUILD_SAMPLES=OFF >"$2.log" 2>&1 || { cat "$2.log"; exit 1; }
    cmake --build "$2" -j "$JOBS" --target eco_static >>"$2.log" 2>&1 || { tail -30 "$2.log"; exit 1; }
}
prog() { # source dir, build dir, program: the same bench source against each
    cc -O2 -I"$1" -Ibench "bench/$3.c" "$2/libeco.a" $(pkg-config --libs libevent_core libevent_extra) -lpthread \
        -o "$2/$3"
}
echo "== build: new (this tree) and old ($OLD)" >&2
mkdir -p "$B"
rm -rf "$B/old-src"
mkdir -p "$B/old-src"
git archive "$OLD" | tar -x -C "$B/old-src"
lib . "$B/new"
lib "$B/old-src" "$B/old"
for side in new old; do
    src=.
    [ "$side" = old ] && src=$B/old-src
    for p in bench_spawn bench_burst; do prog "$src" "$B/$side" "$p"; done
done
prog . "$B/new" bench_million
mkdir -p "$B/go"
GOCACHE=$(pwd)/$B/go/cache GOPATH=$(pwd)/$B/go/path go build -o "$B/go/million" bench/go/million.go

RAW=$B/raw.txt
: >"$RAW"
run() { # tag program args...: its RESULT lines, tagged, into RAW
    tag=$1; shift
    out=$("$@") || { echo "failed: $*" >&2; exit 1; }
    printf '%s\n' "$out" | awk -v t="$tag" '$1 == "RESULT" { print t, $2, $3 }' >>"$RAW"
}

r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "== spawn and burst, round $r/$ROUNDS" >&2
    if [ $((r % 2)) -eq 1 ]; then order="new old"; else order="old new"; fi
    for side in $order; do run "$side" "$B/$side/bench_spawn"; done
    for side in $order; do run "$side" "$B/$side/bench_burst" "$N"; done
    r=$((r + 1))
done

# Instructions per spawn, whatever the load: two callgrind runs with 100,000
# and 200,000 operations; the difference leaves start-up out.
echo "== callgrind" >&2
for side in new old; do
    for n in 100000 200000; do
        valgrind --tool=callgrind --callgrind-out-file="$B/cg.$side.$n" "$B/$side/bench_spawn" "$n" 1 \
            >/dev/null 2>&1
    done
    awk -v s="$side" '/^summary:/ { ir[++f] = $2 } END { printf "%s spawn_instr %.1f\n", s, (ir[2] - ir[1]) / 200000 }' \
        "$B/cg.$side.100000" "$B/cg.$side.200000" >>"$RAW"
done

echo "== memory system calls (strace)" >&2
calls() { # program args...: "total mmap munmap madvise process_madvise mprotect"
    strace -f -c -e trace=%memory,process_madvise -o "$B/strace.txt" "$@" >/dev/null
    awk '$NF == "total" { t = $4 } $NF ~ /^(mmap|munmap|madvise|process_madvise|mprotect)$/ { c[$NF] = $4 }
         END { printf "%d %d %d %d %d %d\n", t, c["mmap"], c["munmap"], c["madvise"], c["process_madvise"], c["mprotect"] }' \
        "$B/strace.txt"
}
: >"$B/calls.txt"
for side in new old; do
    echo "$side base $(calls "$B/$side/bench_burst" 1 cold)" >>"$B/calls.txt"
    echo "$side once $(calls "$B/$side/bench_burst" "$N" cold,idle)" >>"$B/calls.txt"
    echo "$side twice $(calls "$B/$side/bench_burst" "$N" cold,idle,trimmed,idle)" >>"$B/calls.txt"
done

# The default stack (256 KiB) and a small one (SMALL_KB, 16): on a virtual
# machine whose hypervisor shadows page tables, the sparse stack tops of the
# default size cost one page-table page per 7 coroutines, and a million of
# them outgrow what it keeps (BENCHMARKS.md).
SMALL_KB=${SMALL_KB:-16}
r=1
while [ "$r" -le "$MROUNDS" ]; do
    echo "== million, round $r/$MROUNDS" >&2
    if [ $((r % 2)) -eq 1 ]; then
        run c "$B/new/bench_million" "$M" sleep
        run go env GOMAXPROCS=1 "$B/go/million" "$M" sleep
        run small "$B/new/bench_million" "$M" sleep "$SMALL_KB"
    else
        run small "$B/new/bench_million" "$M" sleep "$SMALL_KB"
        run go env GOMAXPROCS=1 "$B/go/million" "$M" sleep
        run c "$B/new/bench_million" "$M" sleep
    fi
    r=$((r + 1))
done
echo "== million, channel" >&2
run small "$B/new/bench_million" "$M" chan "$SMALL_KB"
run go env GOMAXPROCS=1 "$B/go/million" "$M" chan

# ---- report ----
med() { # tag key -> median
    awk -v t="$1" -v k="$2" '$1 == t && $2 == k { print $3 }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "nan";
             else printf "%.2f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
span() { # tag key -> min–max
    awk -v t="$1" -v k="$2" '$1 == t && $2 == k { print $3 }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR) printf "%.2f–%.2f", v[1], v[NR] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'; }
row() { # label key: new, old, ratio
    n=$(med new "$2"); o=$(med old "$2")
    echo "| $1 | $n ($(span new "$2")) | $o ($(span old "$2")) | $(ratio "$n" "$o") |"
}
cl() { awk -v s="$1" -v w="$2" -v f="$3" '$1 == s && $2 == w { print $f }' "$B/calls.txt"; }
crow() { # label scenario
    for s in new old; do
        eval "${s}_t=\$(( \$(cl $s $2 3) - \$(cl $s base 3) ))"
    done
    echo "| $1 | $new_t (mmap $(cl new "$2" 4), munmap $(cl new "$2" 5), madvise $(cl new "$2" 6), process_madvise $(cl new "$2" 7), mprotect $(cl new "$2" 8)) | $old_t (mmap $(cl old "$2" 4), munmap $(cl old "$2" 5), madvise $(cl old "$2" 6)) | $(ratio "$new_t" "$old_t") |"
}
mrow() { # label tag key_c key_go
    c=$(med "$2" "$3"); g=$(med go "$4")
    echo "| $1 | $c ($(span "$2" "$3")) | $g ($(span go "$4")) | $(ratio "$c" "$g") |"
}

REPORT=$B/report.md
{
echo "Command: \`bench/run_stacks.sh\` (ROUNDS=$ROUNDS, MROUNDS=$MROUNDS, N=$N, M=$M; old = $OLD"
echo "at $(git rev-parse --short "$OLD"), new = $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+changes'))."
echo
echo "Machine: Linux $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores,"
echo "shared with other work (load average $(cut -d' ' -f1-3 /proc/loadavg) at the end); $(go version | cut -d' ' -f3);"
echo "$(date -u '+%Y-%m-%d %H:%M UTC')."
echo
echo "| measure (median of rounds, min–max) | new | old | new/old |"
echo "|---|---|---|---|"
row "spawn: create+resume+finish+join, warm pool, ns" spawn_eco_ns
row "spawn, instructions per operation (callgrind)" spawn_instr
row "burst of $N, first: wall ns per coroutine" burst_cold_wall_ns
row "the same, CPU ns per coroutine" burst_cold_cpu_ns
row "burst again at once: wall ns per coroutine" burst_warm_wall_ns
row "the same, CPU ns per coroutine" burst_warm_cpu_ns
row "loop runs on after the bursts, s (the pool's trim timer)" burst_idle_s
row "VmRSS then, KiB" burst_idle_rss_kb
row "burst after that: wall ns per coroutine" burst_trimmed_wall_ns
row "the same, CPU ns per coroutine" burst_trimmed_cpu_ns
row "eco_teardown at the end, ms" burst_teardown_ms
echo
echo "Memory system calls (strace -f -c, mmap, munmap, madvise, process_madvise, mprotect, brk; less the"
echo "$(cl new base 3) (new) and $(cl old base 3) (old) of a process with one coroutine):"
echo
echo "| process | new | old | new/old |"
echo "|---|---|---|---|"
crow "burst of $N started and finished, loop run until idle" once
crow "the same twice" twice
echo
echo "| $M parked (median of rounds, min–max) | libeco | Go GOMAXPROCS=1 | libeco/Go |"
echo "|---|---|---|---|"
mrow "in a sleep, 256 KiB stacks (default): seconds to start them all" c million_sleep_start_s million_go_sleep_start_s
mrow "resident bytes each (VmRSS)" c million_sleep_rss_bytes_per_co million_go_sleep_rss_bytes_per_co
mrow "page-table bytes each (VmPTE)" c million_sleep_pte_bytes_per_co million_go_sleep_pte_bytes_per_co
mrow "/proc/self/maps lines" c million_sleep_maps million_go_sleep_maps
echo "| eco_teardown with all asleep, s | $(med c million_sleep_teardown_s) ($(span c million_sleep_teardown_s)) | | |"
mrow "in a sleep, $SMALL_KB KiB stacks: seconds to start them all" small million_sleep_start_s million_go_sleep_start_s
mrow "resident bytes each (VmRSS)" small million_sleep_rss_bytes_per_co million_go_sleep_rss_bytes_per_co
mrow "page-table bytes each (VmPTE)" small million_sleep_pte_bytes_per_co million_go_sleep_pte_bytes_per_co
echo "| eco_teardown with all asleep, s | $(med small million_sleep_teardown_s) ($(span small million_sleep_teardown_s)) | | |"
mrow "on a channel (no timer), $SMALL_KB KiB stacks: seconds to start them all" small million_chan_start_s million_go_chan_start_s
mrow "resident bytes each" small million_chan_rss_bytes_per_co million_go_chan_rss_bytes_per_co
} >"$REPORT"
cat "$REPORT"
