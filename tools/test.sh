#!/bin/sh
# tools/test.sh - the whole test suite: native, ASan+UBSan, TSan, Valgrind,
# and AArch64 under qemu.  Installs missing Debian packages, builds each
# flavour in build-<flavour>/ and runs its ctest.  Stops at the first
# failure.  ECO_FLAVOURS="native asan" limits the run.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc 2>/dev/null || echo 2)
FLAVOURS=${ECO_FLAVOURS:-"native asan tsan valgrind aarch64"}

# libssl-dev and openssl: sample/tls_proxy and test_tls only (libevent-dev
# carries libevent_openssl); the library itself needs neither.
sh tools/deps.sh build-essential cmake pkg-config libevent-dev check redis-server libhiredis-dev \
    libssl-dev openssl

build_and_test() { # name, extra cmake args...
    name=$1; shift
    echo "== $name: build"
    cmake -S . -B "build-$name" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"build-$name.log" 2>&1 ||
        { cat "build-$name.log"; exit 1; }
    cmake --build "build-$name" -j "$JOBS" >>"build-$name.log" 2>&1 ||
        { tail -50 "build-$name.log"; exit 1; }
    echo "== $name: test"
    (cd "build-$name" && ctest --output-on-failure --timeout 600 -j "$JOBS")
}

# AArch64 needs the cross compiler, qemu, and arm64 runtime libraries.
# libevent-dev:arm64 cannot sit beside the native libevent-dev, and its
# headers are the same, so we make its two missing pieces ourselves: .so
# links to the arm64 runtime libraries and a pkg-config file for them.
# libhiredis-dev and libssl-dev are Multi-Arch: same, so their arm64
# packages sit beside the native ones (for sample/mixed, sample/tls_proxy).
aarch64_env() {
    sh tools/deps.sh crossbuild-essential-arm64 qemu-user-static pkgconf:arm64 check:arm64 \
        libevent-2.1-7:arm64 libevent-core-2.1-7:arm64 libevent-pthreads-2.1-7:arm64 \
        libevent-extra-2.1-7:arm64 libevent-openssl-2.1-7:arm64 libhiredis-dev:arm64 \
        libssl-dev:arm64
    dev="$ROOT/.deps/arm64"
    mkdir -p "$dev/lib/pkgconfig"
    for lib in event_core event_pthreads event_extra event_openssl event; do
        so=$(ls /usr/lib/aarch64-linux-gnu/lib$lib-2.1.so.7 2>/dev/null || true)
        [ -n "$so" ] || continue
        ln -sf "$so" "$dev/lib/lib$lib.so"
        cat >"$dev/lib/pkgconfig/lib$lib.pc" <<PC
libdir=$dev/lib
includedir=/usr/include
Name: lib$lib
Description: libevent ($lib) for arm64, runtime libraries from Debian
Version: 2.1.12-stable
Libs: -L\${libdir} -l$lib
Cflags: -I\${includedir}
PC
    done
    export PKG_CONFIG_PATH="$dev/lib/pkgconfig"
}

for f in $FLAVOURS; do
    case $f in
    native) build_and_test native ;;
    asan) build_and_test asan -DECO_ASAN=ON ;;
    tsan) build_and_test tsan -DECO_TSAN=ON ;;
    valgrind)
        sh tools/deps.sh valgrind
        build_and_test valgrind -DECO_VALGRIND=ON ;;
    aarch64)
        # A subshell, so its PKG_CONFIG_PATH does not reach later flavours.
        (aarch64_env
         build_and_test aarch64 -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake") ;;
    *) echo "unknown flavour $f" >&2; exit 2 ;;
    esac
done
echo "== all test flavours passed: $FLAVOURS"
