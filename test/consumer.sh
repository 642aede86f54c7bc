#!/bin/sh
# consumer.sh - ctest's first-contact check, done as a user would: install
# libeco into a fresh prefix, build the README's example against it with
# pkg-config and with find_package(eco) (test/consumer/, which keeps its own
# LIBEVENT), run both, check that the soname, the .pc and the CMake package
# carry one version, configure test/consumer/parent/ (libeco through
# add_subdirectory) and configure libeco where pkg-config has no Check.
#     consumer.sh CMAKE BUILD_DIR SOURCE_DIR LIBDIR CC VERSION
set -eu
CMAKE=$1 BUILD=$2 SRC=$3 LIBDIR=$4 CC=$5 VERSION=$6
T=$BUILD/consumer
rm -rf "$T"
mkdir -p "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
# quiet log args...: runs args with output to log, shown on failure.
quiet() { log=$1; shift; "$@" >"$log" 2>&1 || { cat "$log" >&2; fail "$*"; }; }

P=$T/prefix
quiet "$T/install.log" "$CMAKE" --install "$BUILD" --prefix "$P"
L=$P/$LIBDIR

# One version everywhere: 0.x promises ABI only within a minor release.
major=${VERSION%%.*} minor=${VERSION#*.}; minor=${minor%%.*}
if [ "$major" = 0 ]; then so="libeco.so.$major.$minor"; else so="libeco.so.$major"; fi
[ -e "$L/$so" ] || fail "no $so in $L: $(ls "$L")"
export PKG_CONFIG_PATH="$L/pkgconfig"
[ "$(pkg-config --modversion libeco)" = "$VERSION" ] || fail "libeco.pc says $(pkg-config --modversion libeco)"

# The first C block of README.md, built as its text says.
awk '/^```c$/ { n++; next } /^```$/ && n == 1 { exit } n == 1' "$SRC/README.md" >"$T/example.c"
grep -q eco_setup "$T/example.c" || fail "no example in README.md"
# shellcheck disable=SC2046 # pkg-config's output is a list of options
quiet "$T/cc.log" "$CC" -o "$T/example" "$T/example.c" $(pkg-config --cflags --libs libeco)
LD_LIBRARY_PATH=$L "$T/example" >"$T/example.out" || fail "example: status $?"
{ grep -q "a: step 2" "$T/example.out" && grep -q "b: step 2" "$T/example.out"; } ||
    fail "example printed: $(cat "$T/example.out")"

quiet "$T/consumer.log" "$CMAKE" -S "$SRC/test/consumer" -B "$T/consumer" -DCMAKE_PREFIX_PATH="$P" \
    -DCMAKE_C_COMPILER="$CC" -DECO_VERSION="$VERSION" -DEXAMPLE="$T/example.c"
quiet "$T/consumer-build.log" "$CMAKE" --build "$T/consumer"
# Built-tree rpaths: no LD_LIBRARY_PATH.
"$T/consumer/http_app" || fail "http_app: status $?"
"$T/consumer/static_app" | grep -q "b: step 2" || fail "static_app"

quiet "$T/parent.log" "$CMAKE" -S "$SRC/test/consumer/parent" -B "$T/parent" \
    -DCMAKE_C_COMPILER="$CC" -DECO_SOURCE="$SRC"

# Without Check: the library configures, the tests are off, and it says so.
mkdir "$T/pc"
for pc in "$(pkg-config --variable=pcfiledir libevent_core)"/libevent*.pc; do
    ln -s "$pc" "$T/pc/"
done
quiet "$T/nocheck.log" env PKG_CONFIG_LIBDIR="$T/pc" PKG_CONFIG_PATH= \
    "$CMAKE" -S "$SRC" -B "$T/nocheck" -DCMAKE_C_COMPILER="$CC"
grep -q "Check not found" "$T/nocheck.log" || fail "no message without Check: $(cat "$T/nocheck.log")"
[ ! -e "$T/nocheck/CTestTestfile.cmake" ] || fail "tests configured without Check"
echo "consumer: pkg-config, find_package, add_subdirectory and no-Check builds all fine"
