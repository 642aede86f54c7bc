#!/bin/sh
# bench/run_chan.sh - libeco channels beside Go channels, on this machine.
#
# Builds bench/chan_bench.c (Release, build-bench-chan/) and bench/go/chan.go,
# then runs each row REPS times (default 7), C and Go interleaved so drift
# hits both alike, and prints the medians and the ratio libeco / Go (below
# 1.0: libeco is faster).  MSGS (default 5,000,000) messages per run.
#
#   ./bench/run_chan.sh            REPS=3 MSGS=1000000 ./bench/run_chan.sh
set -eu
cd "$(dirname "$0")/.."
REPS=${REPS:-7}
MSGS=${MSGS:-5000000}
B=build-bench-chan

sh tools/deps.sh build-essential cmake pkg-config libevent-dev golang-go
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DECO_BUILD_BENCH=ON -DECO_BUILD_TESTS=OFF \
    -DECO_BUILD_SAMPLES=OFF >$B.log 2>&1 || { cat $B.log; exit 1; }
cmake --build $B -j "$(nproc)" --target chan_bench >>$B.log 2>&1 || { tail -30 $B.log; exit 1; }
mkdir -p $B/go
# Go's build cache inside the build folder: nothing written outside it.
GOCACHE=$(pwd)/$B/go/cache GOPATH=$(pwd)/$B/go/path go build -o $B/go/chan bench/go/chan.go

C=$B/bench/chan_bench
GO=$B/go/chan
OUT=$B/results.txt
: >$OUT
# row name, C mode, Go mode, GOMAXPROCS
ROWS="pingpong:pingpong:pingpong:1 buffered:buffered:buffered:1 threads:threads:threads:2"
i=1
while [ $i -le "$REPS" ]; do
    for row in $ROWS; do
        IFS=: read -r name cm gm procs <<ROW
$row
ROW
        echo "$name c $($C "$cm" "$MSGS")" >>$OUT
        echo "$name go $(GOMAXPROCS=$procs $GO "$gm" "$MSGS")" >>$OUT
    done
    i=$((i + 1))
done

median() { # row, side
    awk -v r="$1" -v s="$2" '$1 == r && $2 == s { print $3 }' $OUT | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "channels: ns per message, median of $REPS interleaved runs, $MSGS messages each"
printf '%-44s %10s %10s %8s\n' row libeco Go ratio
for row in $ROWS; do
    name=${row%%:*}
    procs=${row##*:}
    c=$(median "$name" c)
    g=$(median "$name" go)
    case $name in
    pingpong) label="unbuffered ping-pong, one thread (one-way)" ;;
    buffered) label="buffered 1024, one thread" ;;
    threads) label="buffered 1024, two threads" ;;
    esac
    printf '%-44s %10.2f %10.2f %8.2f   (Go GOMAXPROCS=%s)\n' "$label" "$c" "$g" \
        "$(echo "$c $g" | awk '{ print $1 / $2 }')" "$procs"
done
echo "raw runs: $OUT"
