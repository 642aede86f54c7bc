#!/bin/sh
# check_samples.sh - ctest's end-to-end check of the socket samples:
# echo_client through echo_server, then through tcp_proxy, every byte
# verified by echo_client, with one thread and with --threads 2; bad
# arguments rejected with status 2.
#     check_samples.sh BINDIR [EMULATOR]
# Servers listen on loopback ports the kernel picks and are stopped by PID.
set -u
BIN=$1
EMU=${2:-}
TMP=$(mktemp -d)
PIDS=""
cleanup() { [ -z "$PIDS" ] || kill $PIDS 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# start NAME args...: runs a server, waits for its "listening ... port N"
# line and sets PORT.
STARTS=0
start() {
    name=$1; shift
    # A file of its own per start: the background job creates it only when
    # it runs, and a file of an earlier start under the same name would
    # show that server's line (and port) meanwhile.
    STARTS=$((STARTS + 1))
    outf="$TMP/$name.$STARTS.out"
    $EMU "$BIN/$name" "$@" >"$outf" 2>&1 &
    PIDS="$PIDS $!"
    i=0
    # Until that line is whole: a newline is the last byte written.
    while ! grep -q 'listening' "$outf" 2>/dev/null || [ -n "$(tail -c 1 "$outf")" ]; do
        i=$((i + 1))
        [ $i -le 200 ] || fail "$name did not start: $(cat "$outf" 2>/dev/null)"
        sleep 0.05
    done
    PORT=$(sed -n 's/.*listening on [^ ]* port \([0-9]*\).*/\1/p' "$outf")
    [ -n "$PORT" ] || fail "no port in: $(cat "$outf")"
}

client() { # port conns size
    out=$($EMU "$BIN/echo_client" --port "$1" --conns "$2" --seconds 1 --size "$3") ||
        fail "echo_client --port $1 --conns $2 --size $3: $out"
    echo "$out"
    case $out in *" 0 failures"*) ;; *) fail "echo_client reported failures: $out" ;; esac
}

start echo_server --port 0
ECHO=$PORT
client "$ECHO" 50 8
client "$ECHO" 4 200000

start tcp_proxy --listen 0 --backend "127.0.0.1:$ECHO"
client "$PORT" 50 8
client "$PORT" 4 200000

start echo_server --port 0 --threads 2
ECHO2=$PORT
client "$ECHO2" 50 8
start tcp_proxy --listen 0 --backend "127.0.0.1:$ECHO2" --threads 2
client "$PORT" 50 8
client "$PORT" 4 200000

# A backend by name (eco_getaddrinfo), from the hosts file only.
if grep -q '^127\.0\.0\.1[[:space:]].*localhost' /etc/hosts 2>/dev/null; then
    start tcp_proxy --listen 0 --backend "localhost:$ECHO"
    client "$PORT" 4 8
fi

for bad in "echo_server --port 70000" "echo_server" "tcp_proxy --listen 1 --backend nohost" \
    "echo_server --port 0 --threads 0" "tcp_proxy --listen 0 --backend 127.0.0.1:1 --threads 65" \
    "echo_client --port 1 --conns 0 --seconds 1 --size 1"; do
    # shellcheck disable=SC2086
    $EMU "$BIN"/$bad >"$TMP/bad.out" 2>&1
    st=$?
    [ $st -eq 2 ] || fail "'$bad' exited $st, not 2"
    grep -q usage "$TMP/bad.out" || fail "'$bad' printed no usage"
done
echo "samples OK"
