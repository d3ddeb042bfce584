# SPDX-License-Identifier: Apache-2.0
"""The version is written once, in CMake's project(VERSION); the package's must equal it."""

import pathlib
import re

import pytest

import tillsync

CMAKE = pathlib.Path(__file__).resolve().parents[2] / "CMakeLists.txt"


def cmake_version():
    if not CMAKE.exists():
        pytest.skip("not run from a source tree (no %s)" % CMAKE)
    m = re.search(r"project\(tillsync\s+VERSION\s+([0-9.]+)", CMAKE.read_text())
    assert m, "no project(tillsync VERSION ...) in %s" % CMAKE
    return m.group(1)


def test_package_version_is_cmake_project_version():
    assert tillsync.__version__ == cmake_version()


def test_library_version_and_abi():
    # The tests run against the library built from the same tree.
    assert tillsync.library_version() == tillsync.__version__
    assert tillsync.abi_version() == 0
    assert tillsync._lib.SONAME == "libtillsync.so.0"
