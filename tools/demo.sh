#!/bin/sh
# tools/demo.sh - builds libeco and runs the demo sample.
set -eu
cd "$(dirname "$0")/.."
sh tools/deps.sh build-essential cmake pkg-config libevent-dev check
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DECO_BUILD_TESTS=OFF >build-demo.log 2>&1 ||
    { cat build-demo.log; exit 1; }
cmake --build build-demo -j "$(nproc)" >>build-demo.log 2>&1 || { tail -50 build-demo.log; exit 1; }
./build-demo/sample/demo_loop
