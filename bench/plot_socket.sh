#!/bin/sh
# bench/plot_socket.sh - the socket benchmark as a series over N, drawn:
# bench/ab_socket.sh (both sides at once) for echo_server against
# raw_echo_server and tcp_proxy against raw_proxy at every N in NS
# (default "16 64 256 1024 2048"; the proxies need two fds a
# client, and ab_socket.sh runs under `ulimit -n 8192`), ROUNDS (default 8) rounds each, then a
# PNG of the CPU per round trip of libeco over that of the callback
# program, median of the rounds with its quartiles, against N:
#   bench/plots/socket_cpu_ratio.png   (gnuplot, from Debian)
# The two Markdown tables and the points are kept in build-bench-net/;
# PLOT_ONLY=1 draws again from those without measuring.
set -eu
cd "$(dirname "$0")/.."
NS=${NS:-"16 64 256 1024 2048"}
ROUNDS=${ROUNDS:-8}
OUT=build-bench-net
PNG=bench/plots/socket_cpu_ratio.png
sh tools/deps.sh gnuplot-nox
mkdir -p bench/plots "$OUT"

for kind in server proxy; do
    [ "${PLOT_ONLY:-0}" = 0 ] || break
    echo "== ab_socket.sh KIND=$kind NS=\"$NS\" ROUNDS=$ROUNDS" >&2
    KIND=$kind NS="$NS" ROUNDS=$ROUNDS sh bench/ab_socket.sh >"$OUT/plot-$kind.md"
    # | N | A | B | A/B | q1-q3 | range |  ->  N ratio q1 q3
    awk -F'|' '$2 ~ /^ *[0-9]+ *$/ { split($6, q, "-"); print $2 + 0, $5 + 0, q[1] + 0, q[2] + 0 }' \
        "$OUT/plot-$kind.md" >"$OUT/plot-$kind.dat"
done
when=$(date -u -r "$OUT/plot-server.dat" '+%Y-%m-%d %H:%M UTC')
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')

gnuplot <<GP
set terminal pngcairo size 900,520 font ",11" noenhanced
set output "$PNG"
set title "CPU per round trip, libeco / libevent callbacks (both at once; median, quartiles)\n$cpu, $(nproc) cores, $when"
set xlabel "connections N (8-byte ping-pong)"
set ylabel "libeco CPU / callbacks CPU"
set logscale x 2
set xrange [8:4096]
set yrange [0.8:1.3]
set grid
set key top left
# >= 0.95x the callback programs' throughput, as CPU per round trip: <= 1/0.95
f(x) = 1 / 0.95
plot "$OUT/plot-server.dat" using 1:2:3:4 with yerrorlines lw 2 title "echo_server / raw_echo_server", \
     "$OUT/plot-proxy.dat" using 1:2:3:4 with yerrorlines lw 2 title "tcp_proxy / raw_proxy", \
     1 with lines lc rgb "gray" dt 2 notitle, \
     f(x) with lines lc rgb "red" dt 3 title "1 / 0.95"
GP
echo "wrote $PNG" >&2
[ "${PLOT_ONLY:-0}" = 1 ] || cat "$OUT/plot-server.md" "$OUT/plot-proxy.md"
