# SPDX-License-Identifier: Apache-2.0
"""Node: two nodes on loopback (a listener and a static peer, no mDNS) converge, with on_change
and peer states delivered to Python on the package's delivery thread, or on the app's own
thread with deliver="manual"; a raising callback does not stop delivery; errors carry the
library's message."""

import threading
import time

import pytest

import tillsync
from conftest import make_store

QUIET = dict(no_mdns=True, status_path="", log_level=tillsync.LOG_WARN)


def wait_for(pred, secs, what):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    pytest.fail("waited %d s for %s" % (secs, what))


def listener(db):
    return tillsync.Node(db, listen="tcp://127.0.0.1:*", **QUIET)


def test_two_nodes_converge_with_callbacks(tmp_path):
    a, b = make_store(tmp_path / "a.db"), make_store(tmp_path / "b.db")
    changes, states, sessions, threads = [], [], [], set()
    got_change = threading.Event()

    def on_change(c):
        threads.add(threading.current_thread().name)
        changes.append(c)
        got_change.set()

    def on_peer_state(e):
        threads.add(threading.current_thread().name)
        states.append(e)

    with listener(a.path) as na:
        assert na.endpoint.startswith("tcp://127.0.0.1:")
        peer = "%s#%s" % (na.endpoint, a.public_key)
        with tillsync.Node(
            b.path,
            listen="",
            peers=[peer],
            on_change=on_change,
            on_peer_state=on_peer_state,
            on_peer=sessions.append,
            **QUIET
        ) as nb:
            a.execute("INSERT INTO products VALUES('p1', 'tea', 10)")
            assert got_change.wait(30), "no on_change in Python"
            wait_for(lambda: a.hash() == b.hash(), 30, "b to show a's row")
            assert b.execute("SELECT name, stock FROM products") == [("tea", "10")]
            # Counters: a sale on each till, both sides add them up.
            b.execute("UPDATE products SET stock = stock - 2 WHERE id = 'p1'")
            a.execute("UPDATE products SET stock = stock - 3 WHERE id = 'p1'")
            stock = "SELECT stock FROM products"
            wait_for(
                lambda: a.hash() == b.hash() and a.execute(stock) == [("5",)],
                30,
                "the counter to converge",
            )
            wait_for(lambda: any(e.state == "connected" for e in states), 30, "a connected state")
            st = nb.status()
            assert st["peers"][0]["address"] == na.endpoint
            assert nb.last_error() is None
    assert sum(c.batches for c in changes) >= 1
    connected = [e for e in states if e.state == "connected"][0]
    assert connected.key == a.public_key and connected.online
    assert sessions and sessions[0].up and sessions[0].key == a.public_key
    # Delivered on the package's thread, never on the node's C thread nor the test's.
    assert threads == {"tillsync-events"}
    a.close()
    b.close()


def test_manual_delivery_and_raising_callback(tmp_path):
    a, b = make_store(tmp_path / "a.db"), make_store(tmp_path / "b.db")
    na = listener(a.path)
    na.start()
    seen = []

    def boom(c):
        seen.append((threading.current_thread(), c))
        raise RuntimeError("app bug")

    nb = tillsync.Node(
        b.path,
        listen="",
        peers=["%s#%s" % (na.endpoint, a.public_key)],
        on_change=boom,
        deliver="manual",
        **QUIET
    )
    nb.start()
    try:
        a.execute("INSERT INTO products VALUES('p1', 'tea', 10)")
        # deliver="manual": the callback runs inside dispatch(), on this thread, and its
        # exception reaches the caller.
        with pytest.raises(RuntimeError, match="app bug"):
            end = time.monotonic() + 30
            while time.monotonic() < end:
                nb.dispatch(timeout=0.1)
        assert seen and seen[0][0] is threading.current_thread()
        assert isinstance(seen[0][1], tillsync.Change) and seen[0][1].batches >= 1
        # The node went on: a second change arrives and is queued for next_event().
        a.execute("INSERT INTO products VALUES('p2', 'jam', 1)")
        wait_for(lambda: a.hash() == b.hash(), 30, "the second row")
        evs = []
        wait_for(
            lambda: evs.extend(nb.events()) or any(isinstance(e, tillsync.Change) for e in evs),
            30,
            "a queued Change",
        )
    finally:
        nb.close()
        na.close()
        a.close()
        b.close()


def test_raising_callback_on_delivery_thread(tmp_path, caplog):
    a, b = make_store(tmp_path / "a.db"), make_store(tmp_path / "b.db")
    calls = []

    def flaky(c):
        calls.append(c)
        if len(calls) == 1:
            raise ValueError("first call fails")

    with listener(a.path) as na:
        with tillsync.Node(
            b.path,
            listen="",
            peers=["%s#%s" % (na.endpoint, a.public_key)],
            on_change=flaky,
            **QUIET
        ) as nb:
            a.execute("INSERT INTO products VALUES('p1', 'tea', 10)")
            wait_for(lambda: len(calls) >= 1, 30, "the first on_change")
            a.execute("INSERT INTO products VALUES('p2', 'jam', 1)")
            wait_for(lambda: len(calls) >= 2, 30, "on_change after a callback raised")
            assert nb.callback_errors == 1
    assert "a Node callback raised" in caplog.text
    a.close()
    b.close()


def test_node_errors_carry_messages(tmp_path):
    with pytest.raises(tillsync.NotFoundError) as ei:
        tillsync.Node(tmp_path / "none.db", listen="", **QUIET)
    assert "none.db" in ei.value.message
    with make_store(tmp_path / "a.db") as a:
        with pytest.raises(tillsync.InvalidError) as ei:
            tillsync.Node(a.path, listen="tcp://127.0.0.1:*", peers=["not-an-address"], **QUIET)
        assert "not-an-address" in ei.value.message
        with pytest.raises(tillsync.InvalidError):
            tillsync.Node(a.path, bogus_option=1)
        n = tillsync.Node(a.path, listen="", **QUIET)
        n.start()
        with pytest.raises(tillsync.ExistsError):
            n.start()
        with pytest.raises(tillsync.InvalidError):
            n.next_event(0)  # deliver="thread": the events are the thread's
        n.close()
        n.close()
        with pytest.raises(tillsync.InvalidError) as ei:
            n.status()
        assert "closed" in ei.value.message


def test_log_lines_reach_python(tmp_path):
    with make_store(tmp_path / "a.db") as a:
        n = tillsync.Node(
            a.path,
            listen="tcp://127.0.0.1:*",
            on_log=lambda ev: None,
            deliver="manual",
            no_mdns=True,
            status_path="",
            log_level=tillsync.LOG_INFO,
        )
        n.start()
        try:
            logs = []
            wait_for(lambda: logs.extend(n.events()) or logs, 30, "a log line")
        finally:
            n.close()
        assert all(isinstance(ev, tillsync.Log) for ev in logs)
        assert logs[0].line
        assert logs[0].level in (tillsync.LOG_ERROR, tillsync.LOG_WARN, tillsync.LOG_INFO)
