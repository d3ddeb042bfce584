# SPDX-License-Identifier: Apache-2.0
"""Cloud backup through the package (tillsync.vault_*) against a real `tillsync relay run` on
loopback: two tills of a shop enrolled with the CLI (shop key, data key, grant), an upload cut
after one chunk and resumed, the backup listed on the other till, restored there with the
source's content hash (and the till still enrolled), keep-N, delete, and the errors a binding
must map (no such backup, a till without a grant). The CLI is $TILLSYNC_CLI (ctest sets it to
the build's tillsync)."""

import os
import re
import subprocess
import time

import pytest

import tillsync
from conftest import make_store

CLI = os.environ.get("TILLSYNC_CLI")
pytestmark = pytest.mark.skipif(not CLI, reason="needs $TILLSYNC_CLI (the tillsync program)")


def cli(*args):
    r = subprocess.run([CLI] + [str(a) for a in args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "tillsync %s: %s" % (" ".join(map(str, args)), r.stderr)
    return r.stdout


@pytest.fixture
def shop(tmp_path):
    """A relay serving a shop, and two of its tills (a.db with products, b.db empty), each with
    the shop's data key and grant. Yields (a, b)."""
    key = tmp_path / "shop.key"
    cli("shop", "create", key, "--name", "Py Vault Shop")
    relay = tmp_path / "relay"
    rk = re.search(r"public key: ([0-9a-f]{64})", cli("relay", "init", relay)).group(1)
    admin = re.search(r"^admin key: *([0-9a-f]{64})$", cli("shop", "show", key), re.M).group(1)
    cli("relay", "admit", relay, admin, "--quota-mb", "50")
    log = open(tmp_path / "relay.log", "w")
    proc = subprocess.Popen(
        [CLI, "relay", "run", str(relay), "--listen", "tcp://127.0.0.1:*"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ep = None
        for _ in range(200):
            m = re.search(r"listening on (tcp:\S+)", (tmp_path / "relay.log").read_text())
            if m:
                ep = m.group(1)
                break
            assert proc.poll() is None, (tmp_path / "relay.log").read_text()
            time.sleep(0.05)
        assert ep, "the relay did not say where it listens"
        dbs, devices = [], []
        for name in ("a", "b"):
            db = tmp_path / ("%s.db" % name)
            with make_store(db) as s:
                devices += ["--device", s.public_key]
            cli("enrol", db, "--shop-key", key, "--name", "till-" + name)
            dbs.append(db)
        (tmp_path / "dkey").write_text(cli("shop", "data-key", key, *devices))
        (tmp_path / "grant").write_text(
            cli("shop", "grant", key, "--relay", "%s#%s" % (ep, rk), "--quota-mb", "50")
        )
        for db in dbs:
            cli("trust", "add", db, tmp_path / "dkey")
            cli("enrol", db, tmp_path / "grant")
        with tillsync.Store(dbs[0]) as s:
            # enough incompressible rows for several 1 MiB chunks
            s.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2499) "
                "INSERT INTO products SELECT 'p' || i, hex(randomblob(600)), i FROM n"
            )
            s.seal()
        yield dbs[0], dbs[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_backup_resume_list_restore_keep_delete(shop):
    a, b = shop
    with tillsync.Store(a) as s:
        want = s.hash()
    seen = []
    r = tillsync.vault_backup(a, max_chunks=1, progress=lambda ph, done, tot: seen.append(ph))
    assert not r.complete and r.chunks_sent == 1 and not r.resumed and r.backup.chunks >= 2
    assert seen and set(seen) <= {1, 2}
    assert tillsync.vault_list(b) == []
    r2 = tillsync.vault_backup(a)
    assert r2.complete and r2.resumed and r2.backup.id == r.backup.id
    assert r2.chunks_held == 1 and r2.chunks_sent == r.backup.chunks - 1
    assert r2.relay.startswith("tcp://127.0.0.1:")
    (e,) = tillsync.vault_list(b)
    assert e.id == r.backup.id and e.size == r2.backup.size and e.chunks == r.backup.chunks
    assert e.epoch == 1 and len(e.hash) == 64 and e.origin == r2.backup.origin

    rr = tillsync.vault_restore(b, "latest")
    assert rr.backup_site_id == e.origin and rr.site_id != e.origin
    with tillsync.Store(b) as s:
        assert s.hash() == want
    # still enrolled with the shop's data key and grant: it reaches the vault again
    assert [x.id for x in tillsync.vault_list(b)] == [e.id]
    # by a prefix of the id, too
    tillsync.vault_restore(b, e.id[:8])

    # keep: a second backup of a's, then keep 1 deletes the first only
    r3 = tillsync.vault_backup(a)
    assert r3.complete and not r3.resumed and r3.backup.id != e.id
    assert tillsync.vault_keep(a, 1) == 1
    assert [x.id for x in tillsync.vault_list(b)] == [r3.backup.id]
    with pytest.raises(tillsync.InvalidError):
        tillsync.vault_keep(a, 0)
    tillsync.vault_delete(b, r3.backup.id)
    assert tillsync.vault_list(a) == []


def test_errors(shop, tmp_path):
    a, b = shop
    with pytest.raises(tillsync.NotFoundError) as ei:
        tillsync.vault_restore(b, "latest")
    assert "no cloud backup" in ei.value.message
    with pytest.raises(tillsync.NotFoundError):
        tillsync.vault_delete(b, "0123456789abcdef")
    lone = tmp_path / "lone.db"
    make_store(lone).close()
    with pytest.raises(tillsync.NotFoundError) as ei:
        tillsync.vault_backup(lone)
    assert "not enrolled" in ei.value.message
    assert not os.path.exists(str(lone) + ".vault-pending")
