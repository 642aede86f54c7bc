# The socket benchmark (issue 3): sample/echo_server and sample/tcp_proxy
# against the same servers written with raw libevent callbacks, driven by
# one load generator.  Run them with bench/run_socket.sh.
add_executable(raw_echo_server ${CMAKE_CURRENT_SOURCE_DIR}/raw_echo_server.c)
target_link_libraries(raw_echo_server PRIVATE PkgConfig::ECO_LIBEVENT Threads::Threads)
add_executable(raw_proxy ${CMAKE_CURRENT_SOURCE_DIR}/raw_proxy.c)
target_link_libraries(raw_proxy PRIVATE PkgConfig::ECO_LIBEVENT)
add_executable(loadgen ${CMAKE_CURRENT_SOURCE_DIR}/loadgen.c)
# bufferevent echo: a coroutine per connection on eco_bev_* against the
# same server with bufferevent callbacks (bench/run_bev.sh).
add_executable(bev_echo ${CMAKE_CURRENT_SOURCE_DIR}/bev_echo.c)
target_link_libraries(bev_echo PRIVATE eco_static)
# TLS: the load generator of bench/run_tls.sh, when OpenSSL is there.
if(TARGET PkgConfig::ECO_LIBEVENT_OPENSSL AND TARGET PkgConfig::ECO_OPENSSL)
  add_executable(tls_loadgen ${CMAKE_CURRENT_SOURCE_DIR}/tls_loadgen.c)
  target_link_libraries(tls_loadgen PRIVATE eco_static PkgConfig::ECO_OPENSSL)
endif()
