# SPDX-License-Identifier: Apache-2.0
"""Store: open and create, replicate with counters, SQL through the store and through Python's
sqlite3, seal, hash, state, status, conflicts, bundle/merge, and errors with the library's
message and code."""

import json

import pytest

import tillsync
from conftest import make_store


def test_open_missing_without_create(tmp_path):
    path = tmp_path / "none.db"
    with pytest.raises(tillsync.NotFoundError) as ei:
        tillsync.Store(path)
    e = ei.value
    assert e.code == -4 and e.name == "TSYNC_ENOTFOUND"
    assert str(path) in e.message
    assert isinstance(e, tillsync.TillsyncError)


def test_create_then_reopen(tmp_path):
    path = tmp_path / "a.db"
    with make_store(path) as s:
        site, key = s.site_id, s.public_key
        assert len(site) == 32 and len(key) == 64
        s.execute("INSERT INTO products VALUES('p1', 'tea', 5)")
    assert (tmp_path / "a.db.key").exists()
    with tillsync.open(path) as s:
        assert s.public_key == key
        assert s.execute("SELECT name, stock FROM products") == [("tea", "5")]


def test_execute_rows_names_and_null(store):
    store.execute(
        "INSERT INTO products VALUES('p1', NULL, 3); INSERT INTO products VALUES('p2', 'jam', 4)"
    )
    rows = store.execute("SELECT id, name FROM products ORDER BY id")
    assert rows == [("p1", None), ("p2", "jam")]
    rows = store.execute("SELECT id, stock FROM products ORDER BY id", names=True)
    assert rows == [{"id": "p1", "stock": "3"}, {"id": "p2", "stock": "4"}]
    # uuid7() exists on the store's connection.
    (u,) = store.execute("SELECT uuid7()")[0]
    assert len(u) == 36


def test_sql_error_carries_sqlite_message(store):
    with pytest.raises(tillsync.InvalidError) as ei:
        store.execute("SELEC 1")
    assert 'near "SELEC"' in ei.value.message and ei.value.name == "TSYNC_EINVAL"
    # The store still works after an error.
    assert store.execute("SELECT 1") == [("1",)]


def test_replicate_errors(store):
    with pytest.raises(tillsync.ExistsError):
        store.replicate("products")
    with pytest.raises(tillsync.NotFoundError) as ei:
        store.replicate("nope")
    assert "nope" in ei.value.message
    store.execute("CREATE TABLE t(x INTEGER PRIMARY KEY, n INTEGER)")
    with pytest.raises(tillsync.UnsupportedError) as ei:
        store.replicate("t")
    assert ei.value.message  # says what to change
    with pytest.raises(tillsync.NotFoundError):
        store.execute("CREATE TABLE c(id TEXT PRIMARY KEY, n INTEGER)")
        store.replicate("c", counters=["missing"])


def test_seal_and_state(store):
    assert store.seal() == 0
    con = store.connect()
    with con:
        con.execute("INSERT INTO products VALUES(?, ?, ?)", ("p1", "tea", 7))
    con.close()
    # Written through Python's own sqlite3: captured, sealed by seal().
    assert store.status()["unsealed"] > 0
    assert store.seal() == 1
    st = store.status()
    assert st["unsealed"] == 0 and st["state"] == "ok"
    state = store.state()
    assert state["site"] == store.site_id


def test_closed_store_raises(tmp_path):
    s = make_store(tmp_path / "a.db")
    s.close()
    s.close()  # idempotent
    assert s.closed
    with pytest.raises(tillsync.InvalidError) as ei:
        s.seal()
    assert "closed" in ei.value.message


def sync(a, b):
    """Both ways through bundles, each only what the other lacks."""
    rb = b.merge(a.bundle(since=b.state()))
    ra = a.merge(b.bundle(since=json.dumps(a.state())))
    return ra, rb


def test_two_stores_converge_with_counters(pair):
    a, b = pair
    a.execute("INSERT INTO products VALUES('p1', 'tea', 100)")
    sync(a, b)
    assert a.hash() == b.hash()
    # Concurrent sales on both tills: the counter adds both decrements.
    sell = (
        "UPDATE products SET stock = stock - %d WHERE id = 'p1';"
        "INSERT INTO sales VALUES('%s', 'p1', %d)"
    )
    a.execute(sell % (3, "a1", 3))
    b.execute(sell % (5, "b1", 5))
    assert a.hash() != b.hash()
    ra, rb = sync(a, b)
    assert ra.merged == 1 and rb.merged == 1 and ra.refused == 0
    assert a.hash() == b.hash()
    assert a.hash("sales") == b.hash("sales")
    for s in (a, b):
        assert s.execute("SELECT stock FROM products") == [("92",)]
        assert s.execute("SELECT count(*) FROM sales") == [("2",)]
    # Merging again: duplicates only.
    r = b.merge(a.bundle())
    assert r.merged == 0 and r.duplicates >= 1


def test_bundle_file_and_merge_file(pair, tmp_path):
    a, b = pair
    a.execute("INSERT INTO products VALUES('p1', 'tea', 1)")
    path = tmp_path / "a.tsb"
    assert a.bundle_file(path) >= 1
    r = b.merge_file(path)
    assert r.merged >= 1 and a.hash() == b.hash()
    with pytest.raises(tillsync.TillsyncIOError) as ei:
        b.merge_file(tmp_path / "missing.tsb")
    assert "missing.tsb" in ei.value.message


def test_conflicts_parsed(pair):
    a, b = pair
    a.execute("INSERT INTO products VALUES('p1', 'tea', 1)")
    sync(a, b)
    a.execute("UPDATE products SET name = 'green tea' WHERE id = 'p1'")
    b.execute("UPDATE products SET name = 'black tea' WHERE id = 'p1'")
    ra, rb = sync(a, b)
    assert ra.conflicts + rb.conflicts >= 1
    assert a.hash() == b.hash()
    conflicts = a.conflicts() + b.conflicts()
    assert isinstance(conflicts, list) and conflicts
    assert any("name" in json.dumps(c) for c in conflicts)
    assert a.status()["conflicts"] + b.status()["conflicts"] >= 1


def test_merge_garbage_is_refused_with_report(store):
    before = store.hash()
    with pytest.raises(tillsync.TillsyncError) as ei:
        store.merge(b"not a bundle at all")
    e = ei.value
    assert e.code in (-8, -9) and e.message  # TSYNC_ECORRUPT or TSYNC_EVERSION
    assert isinstance(e.report, tillsync.MergeReport) and e.report.merged == 0
    assert store.hash() == before


def test_log_and_prune(store):
    store.execute("INSERT INTO products VALUES('p1', 'tea', 1)")
    assert store.log()["batches"] >= 1
    assert store.prune() >= 0


def test_read_only_store(tmp_path):
    path = tmp_path / "a.db"
    with make_store(path) as s:
        s.execute("INSERT INTO products VALUES('p1', 'tea', 1)")
        want = s.hash()
    with tillsync.Store(path, read_only=True, synchronous=tillsync.SYNC_FULL) as r:
        assert r.hash() == want
        assert r.execute("SELECT name FROM products") == [("tea",)]
        with pytest.raises(tillsync.InvalidError) as ei:
            r.execute("INSERT INTO products VALUES('p2', 'jam', 1)")
        assert "readonly database" in ei.value.message
