# The socket benchmark (issue 3): sample/echo_server and sample/tcp_proxy
# against the same servers written with raw libevent callbacks, driven by
# one load generator.  Run them with bench/run_socket.sh.
add_executable(raw_echo_server ${CMAKE_CURRENT_SOURCE_DIR}/raw_echo_server.c)
target_link_libraries(raw_echo_server PRIVATE PkgConfig::ECO_LIBEVENT Threads::Threads)
add_executable(raw_proxy ${CMAKE_CURRENT_SOURCE_DIR}/raw_proxy.c)
target_link_libraries(raw_proxy PRIVATE PkgConfig::ECO_LIBEVENT)
add_executable(loadgen ${CMAKE_CURRENT_SOURCE_DIR}/loadgen.c)
