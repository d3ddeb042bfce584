# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: every test runs against the library $TILLSYNC_LIBRARY names (the build
tree's in ctest: CMakeLists.txt sets it), else the system's libtillsync.so.0."""

import pytest

import tillsync

SCHEMA = (
    "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE sales(id TEXT PRIMARY KEY, product TEXT, qty INTEGER NOT NULL DEFAULT 0);"
)


def make_store(path):
    """A new database with products (stock a counter) and sales, both replicated."""
    s = tillsync.Store(path, create=True)
    s.execute(SCHEMA)
    s.replicate("products", counters=["stock"])
    s.replicate("sales")
    return s


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "a.db")
    yield s
    s.close()


@pytest.fixture
def pair(tmp_path):
    a, b = make_store(tmp_path / "a.db"), make_store(tmp_path / "b.db")
    yield a, b
    a.close()
    b.close()
