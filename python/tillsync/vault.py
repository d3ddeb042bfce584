# SPDX-License-Identifier: Apache-2.0
"""Cloud backup through a relay of the shop's grant (include/tillsync/vault.h; docs/BACKUP.md,
"Cloud backup"): vault_backup, vault_list, vault_restore, vault_delete, vault_keep.

Every function takes the database's path (not a Store) and opens a connection of its own for
the call, as the C functions do, so a running node's database can be backed up from another
thread. The till must be enrolled, hold the shop's data key and its relay grant. Each function
takes the same keywords: key_path (the device key file; None: "<db_path>.key"), timeout_ms (per
relay, per answer; 0: 10 s) and progress (a callable progress(phase, done, total), phase 2 for
bytes uploaded, 3 for bytes downloaded; it runs on the calling thread during the call).
"""

import ctypes

from . import _lib
from ._lib import check, enc
from .store import restore_call


class VaultEntry:
    """One backup in the vault: id (32 hex digits), created_ms (Unix ms, when the till made it),
    size (bytes stored: the encrypted file), chunks (of 1 MiB), epoch (the data-key epoch it is
    encrypted under), origin (the site id of the till that made it, hex), hash (BLAKE2b-256 of
    the encrypted file, hex)."""

    __slots__ = ("id", "created_ms", "size", "chunks", "epoch", "origin", "hash")

    def __init__(self, e):
        self.id = e.id.decode("ascii")
        self.created_ms = e.created_ms
        self.size = e.size
        self.chunks = e.chunks
        self.epoch = e.epoch
        self.origin = bytes(e.origin).hex()
        self.hash = bytes(e.hash).hex()

    def __repr__(self):
        return "VaultEntry(id=%r, size=%d, chunks=%d, origin=%r)" % (
            self.id,
            self.size,
            self.chunks,
            self.origin,
        )


class VaultReport:
    """What an upload did: backup (a VaultEntry: the backup uploaded, or still pending),
    chunks_sent (in this call), chunks_held (the relay held them already: an earlier,
    interrupted call), resumed (this call went on with an upload an earlier call began),
    complete (committed and verified by the relay; False: still pending), relay (its address)."""

    __slots__ = ("backup", "chunks_sent", "chunks_held", "resumed", "complete", "relay")

    def __init__(self, r):
        self.backup = VaultEntry(r.backup)
        self.chunks_sent = r.chunks_sent
        self.chunks_held = r.chunks_held
        self.resumed = bool(r.resumed)
        self.complete = bool(r.complete)
        self.relay = r.relay.decode("utf-8", "replace")

    def __repr__(self):
        return "VaultReport(id=%r, complete=%r, resumed=%r, chunks_sent=%d, chunks_held=%d)" % (
            self.backup.id,
            self.complete,
            self.resumed,
            self.chunks_sent,
            self.chunks_held,
        )


def _options(key_path, timeout_ms, progress, max_chunks=0):
    """A tsync_vault_options, and the ctypes callback to keep alive for the call."""
    o = _lib.init_struct(_lib.VaultOptions, "tsync_vault_options_init")
    o.key_path = enc(key_path)
    o.timeout_ms = timeout_ms
    o.max_chunks = max_chunks
    cb = None
    if progress is not None:

        def on_progress(_ctx, phase, done, total):
            progress(phase, done, total)

        cb = _lib.BACKUP_PROGRESS_CB(on_progress)
        o.progress = cb
    return o, cb


def vault_backup(db_path, key_path=None, timeout_ms=0, max_chunks=0, progress=None):
    """Backs up the database at db_path (sealed, consistent, checked), encrypts it under the
    shop's latest data key this till holds, uploads it in 1 MiB chunks and commits it. An
    interrupted upload waits beside the database ("<db_path>.vault-pending"); the next call
    finishes it first, sending only the chunks the relay lacks, and says resumed (call again for
    a new backup). max_chunks: send at most this many chunks in this call (0: all). Returns a
    VaultReport. Raises NotFoundError (not enrolled, no grant, no data key sealed to this till),
    FullError (the shop's quota at the relay), RefusedError, TillsyncIOError (no relay reachable:
    the upload stays pending)."""
    o, _cb = _options(key_path, timeout_ms, progress, max_chunks)
    r = _lib.init_struct(_lib.VaultReport, "tsync_vault_report_init")
    check(_lib.lib().tsync_vault_backup(enc(db_path), ctypes.byref(o), ctypes.byref(r)))
    return VaultReport(r)


def vault_list(db_path, key_path=None, timeout_ms=0):
    """The shop's committed backups at its relay, oldest first: a list of VaultEntry."""
    o, _cb = _options(key_path, timeout_ms, None)
    L = _lib.lib()
    p = ctypes.POINTER(_lib.VaultEntry)()
    n = ctypes.c_size_t()
    check(L.tsync_vault_list(enc(db_path), ctypes.byref(o), ctypes.byref(p), ctypes.byref(n)))
    try:
        return [VaultEntry(p[i]) for i in range(n.value)]
    finally:
        if p:
            L.tsync_free(ctypes.cast(p, ctypes.c_void_p))


def vault_restore(db_path, which="latest", key_path=None, timeout_ms=0, progress=None):
    """Downloads backup `which` (an id, a unique prefix of at least 8 hex digits, or "latest"),
    checks every chunk and the whole file, decrypts it and restores it in place of the database
    as restore() does (a new site id; on any failure the live database stays as it was). The
    till's own trust records are kept across the restore. Returns a RestoreReport. Raises
    NotFoundError (no such backup), InvalidError (a prefix that names several), CorruptError
    (damaged at the relay), BusyError (the database is open: close every Store and Node on it)."""
    o, _cb = _options(key_path, timeout_ms, progress)
    L = _lib.lib()
    return restore_call(L.tsync_vault_restore, enc(db_path), enc(which), ctypes.byref(o))


def vault_delete(db_path, which, key_path=None, timeout_ms=0):
    """Deletes backup `which` (an id or a unique prefix) from the relay. Raises NotFoundError,
    InvalidError (an ambiguous prefix)."""
    o, _cb = _options(key_path, timeout_ms, None)
    check(_lib.lib().tsync_vault_delete(enc(db_path), enc(which), ctypes.byref(o)))


def vault_keep(db_path, keep, key_path=None, timeout_ms=0):
    """Keeps the newest `keep` backups this till made and deletes its older ones (other tills'
    are left alone); returns how many went. Raises InvalidError when keep is 0."""
    o, _cb = _options(key_path, timeout_ms, None)
    deleted = ctypes.c_uint32()
    check(_lib.lib().tsync_vault_keep(enc(db_path), keep, ctypes.byref(o), ctypes.byref(deleted)))
    return deleted.value
