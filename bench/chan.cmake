# Channel benchmarks (bench/run_chan.sh runs them beside bench/go/chan.go).
add_executable(chan_bench ${CMAKE_CURRENT_SOURCE_DIR}/chan_bench.c)
target_link_libraries(chan_bench PRIVATE eco_static Threads::Threads)
