# SPDX-License-Identifier: Apache-2.0
# tests/browser/tests.cmake — the console's pages in a real browser, included by the top
# CMakeLists.txt in its TSYNC_TESTS block:
#   browser_console  two tills on loopback, each console opened in headless Chromium (Debian's
#                    chromium, driven by puppeteer-core from tests/browser/package-lock.json):
#                    console.test.js through run.sh. Screenshots of every page go to
#                    tests/browser-shots/ in the build folder (the test prints their paths).
#                    Skipped (77) only when node or chromium is not installed
#                    (scripts/install-deps.sh installs both); anything else missing fails.
add_test(NAME browser_console COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/run.sh ${tsync_cli}
  ${PROJECT_BINARY_DIR}/tests/browser-shots)
set_tests_properties(browser_console PROPERTIES SKIP_RETURN_CODE 77 FAIL_REGULAR_EXPRESSION "FAIL"
  TIMEOUT 300)
