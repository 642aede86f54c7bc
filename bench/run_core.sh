#!/bin/sh
# bench/run_core.sh - the core benchmark of issue 2, in one run:
#   switch   libeco against Boost.Context fcontext and ucontext, ns/switch
#   instr    instructions per switch (and per spawn) from callgrind
#   spawn    create + resume + finish + join, warm stack pool, ns/op
#   mem      resident bytes per coroutine, 100,000 parked in eco_sleep
# Builds a Release tree in build-bench/, runs ROUNDS (default 7) interleaved
# rounds of every timed program (each reports the median of its own
# repetitions), and prints the medians across rounds, their spread, the
# ratios and the issue's targets as a Markdown report (also kept in
# build-bench/core-report.md).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-7}
B=build-bench
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev g++ libboost-context-dev valgrind

echo "== build ($B, Release)" >&2
cmake -S . -B "$B" -DECO_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release \
    -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=OFF >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
cmake --build "$B" -j "$JOBS" >>"$B.log" 2>&1 || { tail -50 "$B.log"; exit 1; }
BIN=$B/bench
[ -x "$BIN/bench_switch_boost" ] || { echo "bench_switch_boost was not built (see $B.log)" >&2; exit 1; }

RAW=$B/core-raw.txt
: >"$RAW"
run() { # program args...: appends its RESULT lines to RAW
    out=$("$@") || { echo "failed: $*" >&2; exit 1; }
    printf '%s\n' "$out" | grep '^RESULT' >>"$RAW"
    printf '%s\n' "$out" | grep '^#' >&2 || true
}

# Interleaved: every round runs every program, libeco and its peer back to
# back in alternating order, so a burst of load elsewhere on the machine
# hits both sides alike.
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "== round $r/$ROUNDS" >&2
    if [ $((r % 2)) -eq 1 ]; then
        run "$BIN/bench_switch" eco
        run "$BIN/bench_switch_boost" switch
        run "$BIN/bench_spawn"
        run "$BIN/bench_switch_boost" spawn
    else
        run "$BIN/bench_switch_boost" switch
        run "$BIN/bench_switch" eco
        run "$BIN/bench_switch_boost" spawn
        run "$BIN/bench_spawn"
    fi
    run "$BIN/bench_switch" ucontext
    run "$BIN/bench_mem"
    r=$((r + 1))
done

# Instructions per operation: two runs under callgrind with N1 and N2
# operations; the difference of their totals over the difference of their
# operation counts leaves out everything that does not scale with N
# (start-up, libevent, dynamic linking).  Deterministic: run once.
N1=100000
N2=200000
per_op() { # key program args...  (N and 1 repetition are appended)
    key=$1; shift
    for n in $N1 $N2; do
        f=$B/callgrind.$key.$n
        valgrind --tool=callgrind --callgrind-out-file="$f.out" "$@" "$n" 1 >"$f.stdout" 2>"$f.stderr" ||
            { cat "$f.stderr" >&2; exit 1; }
    done
    awk -v key="$key" '
        FNR == 1 { file++ }
        /^summary:/ { ir[file] = $2 }
        $1 == "RESULT" && $2 ~ /_(switches|ops)$/ { ops[file] = $3 }
        END { printf "RESULT %s %.2f\n", key, (ir[4] - ir[3]) / (ops[2] - ops[1]) }' \
        "$B/callgrind.$key.$N1.stdout" "$B/callgrind.$key.$N2.stdout" \
        "$B/callgrind.$key.$N1.out" "$B/callgrind.$key.$N2.out" >>"$RAW"
}
echo "== callgrind" >&2
per_op instr_switch_eco "$BIN/bench_switch" eco
per_op instr_switch_fcontext "$BIN/bench_switch_boost" switch
per_op instr_spawn_eco "$BIN/bench_spawn"

# ---- report ----
med() { # key [printf format] -> median over rounds
    awk -v k="$1" '$2 == k { print $3 }' "$RAW" | sort -g |
        awk -v fmt="${2:-%.2f}" '{ v[NR] = $1 } END { if (NR == 0) print "nan";
             else printf fmt "\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
span() { # key -> "min–max" over rounds
    awk -v k="$1" '$2 == k { print $3 }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.2f–%.2f", v[1], v[NR] }'
}
paired() { # key_a key_b -> median over rounds of a/b, each round's pair alone
    awk -v a="$1" -v b="$2" '$2 == a { x[++na] = $3 } $2 == b { y[++nb] = $3 }
        END { for (i = 1; i <= na && i <= nb; i++) print x[i] / y[i] }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
             printf "%.2f (%.2f–%.2f)", m, v[1], v[NR] }'
}
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
met() { awk "BEGIN { print ($1) ? \"**met**\" : \"**not met**\" }"; }

sw_eco=$(med switch_eco_ns); sw_fc=$(med switch_fcontext_ns); sw_uc=$(med switch_ucontext_ns)
sp_eco=$(med spawn_eco_ns); sp_fc=$(med spawn_fcontext_ns)
mem=$(med mem_rss_bytes_per_co %.0f); pte=$(med mem_pte_bytes_per_co %.0f)
maps=$(med mem_maps_lines %d); maxmaps=$(med mem_max_map_count %d); nco=$(med mem_coroutines %d)
in_eco=$(med instr_switch_eco); in_fc=$(med instr_switch_fcontext); in_sp=$(med instr_spawn_eco)
ratio_fc=$(calc %.2f "$sw_eco / $sw_fc")
ratio_uc=$(calc %.3f "$sw_eco / $sw_uc")

REPORT=$B/core-report.md
{
echo "Command: \`bench/run_core.sh\` (ROUNDS=$ROUNDS interleaved rounds; each timed"
echo "program reports the median of its own repetitions, the table gives the median"
echo "over rounds and the min–max of the rounds)."
echo
echo "Machine: Linux $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores;"
echo "$(cc --version | head -1), $(c++ --version | head -1); Boost $(sed -n 's/^#define BOOST_LIB_VERSION "\(.*\)"/\1/p' /usr/include/boost/version.hpp | tr _ .);"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'). Both switch libraries linked statically."
echo
echo "| measure | libeco | peer | ratio libeco/peer |"
echo "|---|---|---|---|"
echo "| switch, ns/switch | $sw_eco ($(span switch_eco_ns)) | fcontext $sw_fc ($(span switch_fcontext_ns)) | $ratio_fc |"
echo "| switch, the same, paired: median of each round's own ratio | | | $(paired switch_eco_ns switch_fcontext_ns) |"
echo "| switch, ns/switch | $sw_eco | ucontext $sw_uc ($(span switch_ucontext_ns)) | $ratio_uc |"
echo "| instructions/switch (callgrind) | $in_eco | fcontext $in_fc | $(calc %.2f "$in_eco / $in_fc") |"
echo "| spawn: create+resume+finish+join, warm pool, ns/op | $sp_eco ($(span spawn_eco_ns)) | fcontext make+jump+jump, no allocation: $sp_fc ($(span spawn_fcontext_ns)) | $(calc %.2f "$sp_eco / $sp_fc") |"
echo "| spawn, instructions/op (callgrind) | $in_sp | | |"
echo "| $nco parked coroutines, resident bytes each (VmRSS) | $mem ($(span mem_rss_bytes_per_co)) | | |"
echo "| the same, page-table bytes each (VmPTE, not in VmRSS) | $pte | | |"
echo "| /proc/self/maps lines with them all alive | $maps (vm.max_map_count $maxmaps) | | |"
echo
echo "| target (issue 2) | measured | |"
echo "|---|---|---|"
echo "| switch ≤ 1.0× Boost fcontext, same run | $ratio_fc× | $(met "$sw_eco <= $sw_fc") |"
echo "| ≤ 30 instructions/switch, FP control words kept | $in_eco | $(met "$in_eco <= 30") |"
echo "| create→resume→finish→join ≤ 50 ns, warm pool | $sp_eco ns | $(met "$sp_eco <= 50") |"
echo "| 100,000 parked ≤ 4.5 KiB (4608 B) resident each, guard page each, default vm.max_map_count | $mem B, $maps maps lines | $(met "$nco >= 100000 && $mem <= 4608 && $maps < $maxmaps") |"
} >"$REPORT"
cat "$REPORT"
