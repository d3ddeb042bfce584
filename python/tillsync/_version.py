# SPDX-License-Identifier: Apache-2.0
# The package's version: the library's project(VERSION) in CMakeLists.txt, the one place it is
# written (tests/test_version.py fails when they differ). pyproject.toml reads it from here.
__version__ = "0.1.0"
