# SPDX-License-Identifier: Apache-2.0
"""Backup, backup-check and restore through the package."""

import pytest

import tillsync
from conftest import make_store


def test_backup_check_restore(tmp_path):
    db = tmp_path / "a.db"
    bak = tmp_path / "a.tsbak"
    with make_store(db) as s:
        s.execute("INSERT INTO products VALUES('p1', 'tea', 10)")
        old_site, want = s.site_id, s.hash()
        manifest = s.backup(bak)
        assert isinstance(manifest, dict) and manifest
        s.execute("UPDATE products SET name = 'later' WHERE id = 'p1'")
        # Restoring while a store has the database open is refused.
        with pytest.raises(tillsync.BusyError) as ei:
            tillsync.restore(db, bak)
        assert ei.value.message
    assert tillsync.backup_encrypted(bak) is False
    assert tillsync.backup_check(bak) == manifest
    r = tillsync.restore(db, bak)
    assert r.backup_site_id == old_site and r.site_id != old_site and not r.new_key
    assert r.manifest == manifest
    with tillsync.Store(db) as s:
        assert s.hash() == want and s.site_id == r.site_id
        assert s.execute("SELECT name FROM products") == [("tea",)]


def test_encrypted_backup_and_damage(tmp_path):
    bak = tmp_path / "e.tsbak"
    plain = tmp_path / "p.tsbak"
    with make_store(tmp_path / "a.db") as s:
        s.execute("INSERT INTO products VALUES('p1', 'tea', 10)")
        # The smallest Argon2id cost libsodium takes (OPSLIMIT_MIN, MEMLIMIT_MIN): a fast test.
        s.backup(bak, passphrase="secret", kdf_opslimit=1, kdf_memlimit=8192)
        s.backup(plain, passphrase=None)
    assert tillsync.backup_encrypted(bak) is True
    assert tillsync.backup_check(bak, passphrase="secret")
    with pytest.raises(tillsync.InvalidError):
        tillsync.backup_check(bak)
    with pytest.raises(tillsync.BadSignatureError) as ei:
        tillsync.backup_check(bak, passphrase="wrong")
    assert ei.value.name == "TSYNC_EBADSIG" and ei.value.message
    # A truncated copy is refused: an encrypted one does not decrypt, a plain one is corrupt.
    for src, cls in ((bak, tillsync.BadSignatureError), (plain, tillsync.CorruptError)):
        cut = tmp_path / "cut.tsbak"
        data = src.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(cls) as ei:
            tillsync.backup_check(cut, passphrase="secret")
        assert str(cut) in ei.value.message
    with pytest.raises(tillsync.NotFoundError):
        tillsync.backup_encrypted(tmp_path / "none.tsbak")
