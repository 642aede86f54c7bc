# eco_run_blocking beside a plain condition-variable pool (bench/run_blocking.sh).
add_executable(bench_blocking ${CMAKE_CURRENT_SOURCE_DIR}/bench_blocking.c)
target_link_libraries(bench_blocking PRIVATE eco_static Threads::Threads)
