#!/bin/sh
# bench/ab_core.sh - the core benchmarks of two builds of libeco, old against
# new, for changes finer than bench/run_core.sh resolves on a busy host:
#   switch    bench_switch eco: ns per switch (a yield/resume round trip / 2)
#   spawn     bench_spawn: create + resume + finish + join, warm pool, ns
#   pingpong  chan_bench pingpong MSGS: one-way unbuffered channel message, ns
#
#   OLD=456af71 sh bench/ab_core.sh     this tree against a git ref (default main)
#   OLD=../other sh bench/ab_core.sh    ... or against another source tree
#   ECO_BENCH_CLOCK=cpu sh bench/ab_core.sh
#                                       the programs time with the process's
#                                       CPU time instead of wall time
#
# Both sides are Release libeco.a builds (each with its own CMakeLists.txt,
# so its own flags) linked into the same benchmark sources, this tree's.
# ROUNDS (default 9) rounds; each round runs every program once per side,
# back to back, which side goes first alternating, all on CPU CPU (default
# 1) when taskset is there.  Each program reports the median of its own
# repetitions; the table gives per side the median over rounds, and the
# median (and min-max) of each round's own new / old ratio.  Below 1: the
# new build is faster.
#
# Why CPU time: this 2-core machine is shared; a program preempted for part
# of a repetition reads slow in wall time, not in CPU time (which still
# carries the other load's cache pollution, but not its time slices).
set -eu
cd "$(dirname "$0")/.."
OLD=${OLD:-main}
ROUNDS=${ROUNDS:-9}
MSGS=${MSGS:-2000000}
CPU=${CPU:-1}
B=build-bench-ab
JOBS=$(nproc 2>/dev/null || echo 2)
[ "$JOBS" -le 2 ] || JOBS=2

sh tools/deps.sh build-essential cmake pkg-config libevent-dev

lib() { # source dir, build dir: a Release libeco.a
    cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DECO_BUILD_TESTS=OFF \
        -DECO_BUILD_SAMPLES=OFF >"$2.log" 2>&1 || { cat "$2.log"; exit 1; }
    cmake --build "$2" -j "$JOBS" --target eco_static >>"$2.log" 2>&1 || { tail -30 "$2.log"; exit 1; }
}
prog() { # source dir, build dir, program: this tree's bench source against it
    cc -O3 -DNDEBUG -I"$1" -Ibench "bench/$3.c" "$2/libeco.a" \
        $(pkg-config --libs libevent_core libevent_extra) -lpthread -o "$2/$3"
}
echo "== build: new (this tree) and old ($OLD)" >&2
mkdir -p "$B"
if [ -d "$OLD" ]; then
    old_src=$(cd "$OLD" && pwd)
else
    old_src=$B/old-src
    rm -rf "$old_src"
    mkdir -p "$old_src"
    git archive "$OLD" | tar -x -C "$old_src"
fi
lib . "$B/new"
rm -rf "$B/old" # OLD may name another tree than last time
lib "$old_src" "$B/old"
for side in new old; do
    src=.
    [ "$side" = old ] && src=$old_src
    for p in bench_switch bench_spawn chan_bench; do prog "$src" "$B/$side" "$p"; done
done

PIN=""
command -v taskset >/dev/null 2>&1 && PIN="taskset -c $CPU"
RAW=$B/raw.txt
: >"$RAW"
run() { # side key program args...: "side key value" into RAW
    side=$1 key=$2; shift 2
    out=$($PIN "$@") || { echo "failed: $*" >&2; exit 1; }
    case $key in
    pingpong) v=$out ;;
    *) v=$(printf '%s\n' "$out" | awk -v k="${key}_eco_ns" '$1 == "RESULT" && $2 == k { print $3 }') ;;
    esac
    echo "$side $key $v" >>"$RAW"
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "== round $r/$ROUNDS" >&2
    if [ $((r % 2)) -eq 1 ]; then order="new old"; else order="old new"; fi
    for side in $order; do run "$side" switch "$B/$side/bench_switch" eco; done
    for side in $order; do run "$side" spawn "$B/$side/bench_spawn"; done
    for side in $order; do run "$side" pingpong "$B/$side/chan_bench" pingpong "$MSGS"; done
    r=$((r + 1))
done

med() { sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
vals() { awk -v s="$1" -v k="$2" '$1 == s && $2 == k { print $3 }' "$RAW"; }
ratios() { # key: each round's new / old
    awk -v k="$1" '$2 == k && $1 == "new" { n[++a] = $3 } $2 == k && $1 == "old" { o[++b] = $3 }
        END { for (i = 1; i <= a && i <= b; i++) print n[i] / o[i] }' "$RAW"
}
clock=${ECO_BENCH_CLOCK:-wall}
echo "Command: \`OLD=$OLD ROUNDS=$ROUNDS ECO_BENCH_CLOCK=$clock sh bench/ab_core.sh\` (pinned: ${PIN:-no})"
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "New: this tree ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ', modified')); old: $OLD"
echo
echo "| benchmark ($clock ns) | new | old | new / old, medians | paired: median of round ratios (min-max) |"
echo "|---|---|---|---|---|"
for key in switch spawn pingpong; do
    n=$(vals new $key | med) o=$(vals old $key | med)
    pm=$(ratios $key | med)
    lo=$(ratios $key | sort -g | head -1) hi=$(ratios $key | sort -g | tail -1)
    printf '| %s | %s | %s | %.3f | %s (%.3f-%.3f) |\n' "$key" "$n" "$o" \
        "$(awk -v a="$n" -v b="$o" 'BEGIN { print a / b }')" "$pm" "$lo" "$hi"
done
