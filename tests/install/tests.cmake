# SPDX-License-Identifier: Apache-2.0
# tests/install/tests.cmake — the tests of what an app gets, included by the top CMakeLists.txt
# in its TSYNC_TESTS block:
#   install_prefix     cmake --install into a temporary prefix; examples/hello.c built there
#                      through pkg-config and find_package, shared and static (install.sh)
#   install_exports    the installed libtillsync.so and .a export exactly what the installed
#                      headers declare (exports.sh; GCC)
#   version_agrees     tsync_version() and tsync_abi_version() of libtillsync.so agree with
#                      tillsync/version.h (version_test.c, linked as an app links it)
# (test_ffi.c, the tsync_*_init functions, is a criterion test like any other.)
add_test(NAME install_prefix COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/install.sh ${PROJECT_SOURCE_DIR}
  ${PROJECT_BINARY_DIR} ${PROJECT_VERSION})
# The examples are built with the library's sanitizers, whose runtime an instrumented
# libtillsync.a needs and which must come first when an instrumented libtillsync.so is loaded.
set(tsync_consumer_flags "")
if(TSYNC_SANITIZE)
  set(tsync_consumer_flags "-fsanitize=address,undefined")
endif()
# Without the install RUNPATH (-DTSYNC_INSTALL_RPATH=OFF, as debian/rules builds) the installed
# tool is run with the prefix's libdir as its library path. (The option is defined later, in
# cmake/install.cmake: unset here means its default, ON.)
set(tsync_install_rpath 1)
if(DEFINED TSYNC_INSTALL_RPATH AND NOT TSYNC_INSTALL_RPATH)
  set(tsync_install_rpath 0)
endif()
set_tests_properties(install_prefix PROPERTIES FAIL_REGULAR_EXPRESSION "FAIL" TIMEOUT 300
  ENVIRONMENT "CC=${CMAKE_C_COMPILER};TSYNC_CONSUMER_FLAGS=${tsync_consumer_flags};TSYNC_INSTALL_RPATH=${tsync_install_rpath}")
if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
  add_test(NAME install_exports COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/exports.sh
    ${PROJECT_BINARY_DIR} ${CMAKE_C_COMPILER})
  set_tests_properties(install_exports PROPERTIES FAIL_REGULAR_EXPRESSION "FAIL" TIMEOUT 120)
else()
  message(STATUS "install_exports needs GCC (-aux-info): not registered with "
                 "${CMAKE_C_COMPILER_ID}")
endif()
add_executable(version_test ${CMAKE_CURRENT_LIST_DIR}/version_test.c)
target_link_libraries(version_test PRIVATE tillsync PkgConfig::CRITERION)
add_test(NAME version_agrees COMMAND version_test)
set_tests_properties(version_agrees PROPERTIES FAIL_REGULAR_EXPRESSION "Tested: 0 \\|" TIMEOUT 60)
