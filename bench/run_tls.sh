#!/bin/sh
# bench/run_tls.sh - TLS termination (issue 14): sample/tls_proxy against
# stunnel4 and haproxy (Debian packages), each in front of one
# bench/raw_echo_server, with the same certificate (ECDSA P-256, made here)
# and the same TLS 1.3 suite, TLS_AES_128_GCM_SHA256 (the only one the
# servers are given and bench/tls_loadgen offers; X25519 key exchange).
# Rows: keep-alive connections with 1 KiB round trips (checked) at N = 8, 64
# and 512, and new connections per second (full handshake, one 1 KiB round
# trip, close) with 64 clients.  For each row the three run ROUNDS times
# (default 5), interleaved, rotating which goes first; the table shows
# medians of the rate and of each server's CPU time per round trip (or per
# connection) from /proc/PID/stat utime+stime (all its threads), and
# ratios.  haproxy runs one thread (nbthread 1), as tls_proxy does;
# stunnel4 runs a thread per connection, as Debian builds it.
# SECONDS_PER_RUN (default 3); PIN=1 (default on two or more CPUs): the
# servers on CPU 1, the load generator and the backend on CPU 0.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-3}
NS=${NS:-"8 64 512"}
CONNS=${CONNS:-64}
B=build-bench-net
JOBS=$(nproc 2>/dev/null || echo 2)

sh tools/deps.sh build-essential cmake pkg-config libevent-dev libssl-dev openssl stunnel4 haproxy

echo "== build ($B, Release)" >&2
cmake -S . -B "$B" -DECO_BUILD_BENCH=ON -DECO_BUILD_TESTS=OFF -DECO_BUILD_SAMPLES=ON \
    -DCMAKE_BUILD_TYPE=Release >"$B.log" 2>&1 || { cat "$B.log"; exit 1; }
cmake --build "$B" -j "$JOBS" --target tls_proxy tls_loadgen raw_echo_server >>"$B.log" 2>&1 ||
    { tail -50 "$B.log"; exit 1; }

ulimit -n 8192 2>/dev/null || true
BASE=$((20000 + $$ % 12000))
P_ECO=$BASE P_STUNNEL=$((BASE + 1)) P_HAPROXY=$((BASE + 2)) P_BACK=$((BASE + 3))
PIN=${PIN:-1}
SRV="" LOAD=""
if [ "$PIN" = 1 ] && [ "$JOBS" -ge 2 ] && command -v taskset >/dev/null; then
    SRV="taskset -c 1" LOAD="taskset -c 0"
fi
T=$B/tls
mkdir -p "$T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/key.pem" \
    -out "$T/cert.pem" -days 2 -subj /CN=localhost >/dev/null 2>&1
cat "$T/cert.pem" "$T/key.pem" >"$T/both.pem"
SUITE=TLS_AES_128_GCM_SHA256
cat >"$T/stunnel.conf" <<CONF
foreground = yes
pid =
output = $T/stunnel.log
[bench]
accept = 127.0.0.1:$P_STUNNEL
connect = 127.0.0.1:$P_BACK
cert = $T/cert.pem
key = $T/key.pem
sslVersionMin = TLSv1.3
ciphersuites = $SUITE
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
CONF
cat >"$T/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 3000
    ssl-default-bind-ciphersuites $SUITE
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:$P_HAPROXY ssl crt $T/both.pem ssl-min-ver TLSv1.3
    default_backend echo
backend echo
    server echo 127.0.0.1:$P_BACK
CONF

PIDS=""
cleanup() { [ -z "$PIDS" ] || kill $PIDS 2>/dev/null || true; }
trap cleanup EXIT INT TERM
run_bg() { # name command...: sets PID_name, waits until its port takes connections
    name=$1 port=$2; shift 2
    "$@" >"$T/$name.out" 2>&1 &
    PIDS="$PIDS $!"
    eval "PID_$name=$!"
    "$B/bench/tls_loadgen" "$port" 1 0 probe || { echo "$name did not start:" >&2; cat "$T/$name.out" >&2; exit 1; }
}
# shellcheck disable=SC2086
run_bg back "$P_BACK" $LOAD "$B/bench/raw_echo_server" "$P_BACK"
# shellcheck disable=SC2086
run_bg eco "$P_ECO" $SRV "$B/sample/tls_proxy" --listen "$P_ECO" --cert "$T/cert.pem" \
    --key "$T/key.pem" --backend "127.0.0.1:$P_BACK"
# shellcheck disable=SC2086
run_bg stunnel "$P_STUNNEL" $SRV stunnel4 "$T/stunnel.conf"
# shellcheck disable=SC2086
run_bg haproxy "$P_HAPROXY" $SRV haproxy -db -f "$T/haproxy.cfg"

# utime + stime of every thread, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

RAW=$T/raw.txt
: >"$RAW"
one() { # side port pid mode n: appends "side mode n rate cpu_us_per_unit"
    c0=$(ticks "$3")
    out=$($LOAD "$B/bench/tls_loadgen" "$2" "$5" "$SECS" "$4") ||
        { echo "tls_loadgen $1 failed: $out" >&2; exit 1; }
    c1=$(ticks "$3")
    echo "$out" | awk -v s="$1" -v m="$4" -v n="$5" -v dc=$((c1 - c0)) -v hz="$HZ" '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { u = (m == "rt") ? v["trips"] : v["conns"]; r = (m == "rt") ? v["round_trips_per_s"] : v["conns_per_s"]
              printf "%s %s %s %s %.3f\n", s, m, n, r, dc * 1e6 / hz / (u > 0 ? u : 1) }' >>"$RAW"
}
row() { # mode n
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        echo "== $1 N=$2 round $r/$ROUNDS" >&2
        case $((r % 3)) in
        1) one libeco "$P_ECO" "$PID_eco" "$1" "$2"; one stunnel "$P_STUNNEL" "$PID_stunnel" "$1" "$2"
           one haproxy "$P_HAPROXY" "$PID_haproxy" "$1" "$2" ;;
        2) one stunnel "$P_STUNNEL" "$PID_stunnel" "$1" "$2"; one haproxy "$P_HAPROXY" "$PID_haproxy" "$1" "$2"
           one libeco "$P_ECO" "$PID_eco" "$1" "$2" ;;
        0) one haproxy "$P_HAPROXY" "$PID_haproxy" "$1" "$2"; one libeco "$P_ECO" "$PID_eco" "$1" "$2"
           one stunnel "$P_STUNNEL" "$PID_stunnel" "$1" "$2" ;;
        esac
        r=$((r + 1))
    done
}
for n in $NS; do row rt "$n"; done
row conn "$CONNS"

median() { sort -g | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2];
                                             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
pick() { awk -v s="$1" -v m="$2" -v n="$3" -v f="$4" '$1 == s && $2 == m && $3 == n { print $f }' "$RAW"; }

echo
echo "Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "stunnel4 $(dpkg-query -W -f='${Version}' stunnel4), haproxy $(dpkg-query -W -f='${Version}' haproxy), OpenSSL $(openssl version | cut -d' ' -f2); TLS 1.3 $SUITE, ECDSA P-256."
echo "Medians of $ROUNDS interleaved runs of ${SECS} s each${SRV:+; servers on CPU 1, load generator and backend on CPU 0}."
echo "rt: keep-alive, 1 KiB round trips/s; conn: new connections/s (handshake, one 1 KiB round trip, close) from $CONNS clients."
echo "CPU: the server's utime+stime per round trip (rt) or per connection (conn), in µs."
echo
echo "| row | tls_proxy /s | stunnel4 /s | haproxy /s | vs stunnel4 (>= 1.0) | vs haproxy (>= 0.9) | tls_proxy CPU µs | stunnel4 CPU µs | haproxy CPU µs | CPU vs haproxy (<= 1.10) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for spec in $(for n in $NS; do echo "rt:$n"; done) "conn:$CONNS"; do
    m=${spec%%:*} n=${spec#*:}
    e=$(pick libeco "$m" "$n" 4 | median); s=$(pick stunnel "$m" "$n" 4 | median)
    h=$(pick haproxy "$m" "$n" 4 | median)
    ce=$(pick libeco "$m" "$n" 5 | median); cs=$(pick stunnel "$m" "$n" 5 | median)
    ch=$(pick haproxy "$m" "$n" 5 | median)
    awk -v row="$m N=$n" -v e="$e" -v s="$s" -v h="$h" -v ce="$ce" -v cs="$cs" -v ch="$ch" 'BEGIN {
        printf "| %s | %.0f | %.0f | %.0f | %.3f | %.3f | %.1f | %.1f | %.1f | %.3f |\n", row, e, s, h,
               e / s, e / h, ce, cs, ch, (ch > 0 ? ce / ch : 0) }'
done
