# SPDX-License-Identifier: Apache-2.0
# tests/python/tests.cmake — the test of the Python package (python/), included by the top
# CMakeLists.txt in its TSYNC_TESTS block:
#   python_package   python/ pip-installed into a venv in the build folder (no network) and
#                    python/tests run with pytest against this build's libtillsync.so.0
#                    (venv_pytest.sh). Skipped (77) only without Debian's python3-venv,
#                    python3-pytest, python3-setuptools, python3-wheel (scripts/install-deps.sh).
# Under TSYNC_SANITIZE the library is instrumented and python3 is not: the sanitizer runtimes
# are preloaded into the interpreter (they must come first), leak checking off (the interpreter
# keeps its memory at exit by design; the C tests check the library's leaks).
set(tsync_py_preload "")
if(TSYNC_SANITIZE)
  foreach(rt asan ubsan)
    execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=lib${rt}.so
      OUTPUT_VARIABLE rt_path OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(IS_ABSOLUTE "${rt_path}" AND EXISTS "${rt_path}")
      string(APPEND tsync_py_preload " ${rt_path}")
    endif()
  endforeach()
  string(STRIP "${tsync_py_preload}" tsync_py_preload)
endif()
add_test(NAME python_package COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/venv_pytest.sh
  ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR} $<TARGET_SONAME_FILE:tillsync> "${tsync_py_preload}")
# test_vault.py runs a relay and sets up its shop with the CLI ($TILLSYNC_CLI).
set_tests_properties(python_package PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300
  ENVIRONMENT "TILLSYNC_CLI=$<TARGET_FILE:tillsync_cli>")
