# The core benchmark (issue 2): switch, spawn, memory per coroutine, and the
# Boost.Context fcontext peer.  Run them with bench/run_core.sh.
#
# libeco is linked statically, as the peer is: a call through the PLT would
# be measured as part of the switch.

foreach(name bench_switch bench_spawn bench_mem bench_timers)
  add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${name}.c)
  target_link_libraries(${name} PRIVATE eco_static)
endforeach()

# The peer is C++ and optional: built only when a C++ compiler and the
# Boost.Context header and library are there (Debian libboost-context-dev).
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  include(CheckIncludeFileCXX)
  check_include_file_cxx(boost/context/detail/fcontext.hpp ECO_HAVE_FCONTEXT_HPP)
  # The archive first, for a static link like libeco's.
  find_library(ECO_BOOST_CONTEXT_LIB NAMES libboost_context.a boost_context)
  if(ECO_HAVE_FCONTEXT_HPP AND ECO_BOOST_CONTEXT_LIB)
    add_executable(bench_switch_boost ${CMAKE_CURRENT_SOURCE_DIR}/bench_switch_boost.cpp)
    set_target_properties(bench_switch_boost PROPERTIES CXX_STANDARD 11 CXX_STANDARD_REQUIRED ON
                                                        CXX_EXTENSIONS OFF)
    target_link_libraries(bench_switch_boost PRIVATE ${ECO_BOOST_CONTEXT_LIB})
  else()
    message(STATUS "bench: Boost.Context fcontext not found; bench_switch_boost not built")
  endif()
else()
  message(STATUS "bench: no C++ compiler; bench_switch_boost not built")
endif()

# Stacks at scale (issue 15): bursts and a million parked; bench/run_stacks.sh.
foreach(name bench_burst bench_million)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${name}.c)
    add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${name}.c)
    target_link_libraries(${name} PRIVATE eco_static)
  endif()
endforeach()
