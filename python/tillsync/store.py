# SPDX-License-Identifier: Apache-2.0
"""Store: a replicated SQLite database (include/tillsync/store.h, status.h, backup.h, io.h) and
the functions that work on files rather than an open store (backup_check, restore).

A Store, like the C tsync_store, is used by one thread at a time: it owns one SQLite connection.
Open one per thread to work in parallel; the app's own sqlite3 connections to Store.path may write
at the same time (every write that matters runs under BEGIN IMMEDIATE), and their writes to
replicated tables are captured like any other.
"""

import ctypes
import json
import os
import sqlite3

from . import _lib, errors
from ._closing import Closing
from ._lib import check, dec, enc

SYNC_NORMAL = 1
SYNC_FULL = 2

FORMATS = {"csv": 1, "json": 2, "ndjson": 3}


class MergeReport:
    """What a merge did: counts of batches merged, duplicates, held, refused, row changes parked,
    conflicts LWW resolved, and one line per thing held, parked or refused (messages)."""

    __slots__ = ("merged", "duplicates", "held", "parked", "refused", "conflicts", "messages")

    def __init__(self, r):
        for f in ("merged", "duplicates", "held", "parked", "refused", "conflicts"):
            setattr(self, f, getattr(r, f))
        self.messages = [dec(r.messages[i]) for i in range(r.nmessages)]

    def __repr__(self):
        return (
            "MergeReport(merged=%d, duplicates=%d, held=%d, parked=%d, refused=%d, conflicts=%d)"
        ) % (
            self.merged,
            self.duplicates,
            self.held,
            self.parked,
            self.refused,
            self.conflicts,
        )


class ImportReport:
    """What an import did: data rows read, imported (upserted), rejected, and the bad values as
    "NAME:LINE:COLUMN: why" lines (bad)."""

    __slots__ = ("rows", "imported", "rejected", "bad")

    def __init__(self, r, bad):
        self.rows, self.imported, self.rejected = r.rows, r.imported, r.rejected
        self.bad = list(bad)

    def __repr__(self):
        return "ImportReport(rows=%d, imported=%d, rejected=%d, bad=%r)" % (
            self.rows,
            self.imported,
            self.rejected,
            self.bad,
        )


class RestoreReport:
    """What a restore did: the database's new site id, the site the backup was taken from,
    new_key (no key file was there: a new device key was made, the till must enrol again) and
    the backup's manifest (dict)."""

    __slots__ = ("site_id", "backup_site_id", "new_key", "manifest")

    def __init__(self, r):
        self.site_id = bytes(r.site_id).hex()
        self.backup_site_id = bytes(r.backup_site_id).hex()
        self.new_key = bool(r.new_key)
        m = ctypes.string_at(r.manifest_json).decode("utf-8") if r.manifest_json else None
        self.manifest = json.loads(m) if m else None


def _format(fmt, path):
    """A tsync_io_format from "csv"/"json"/"ndjson", else guessed from path; 0 means CSV."""
    L = _lib.lib()
    if fmt is None:
        return L.tsync_io_format_guess(enc(path)) if path is not None else 0
    code = L.tsync_io_format_parse(enc(fmt))
    if code == 0:
        raise errors.InvalidError("unknown format %r: csv, json or ndjson" % (fmt,), -2)
    return code


def _fopen(path, mode):
    c = _lib.libc()
    f = c.fopen(enc(path), mode)
    if not f:
        e = ctypes.get_errno()
        raise errors.TillsyncIOError("%s: %s" % (os.fspath(path), os.strerror(e)), -6)
    return f


class Store(Closing):
    """An open replicated database.

    Store(path, create=False, key_path=None, synchronous=None, busy_timeout_ms=0,
    read_only=False): opens (with create, creates) the database at path and its device key file
    (default "<path>.key"). synchronous: SYNC_NORMAL (default) or SYNC_FULL.

    Use it as a context manager, or call close(): it frees the C store."""

    def __init__(
        self,
        path,
        create=False,
        key_path=None,
        synchronous=None,
        busy_timeout_ms=0,
        read_only=False,
    ):
        L = _lib.lib()
        self.path = os.fspath(path)
        self._p = None
        o = _lib.init_struct(_lib.StoreOptions, "tsync_store_options_init")
        o.create = 1 if create else 0
        o.synchronous = synchronous or 0
        o.key_path = enc(key_path)
        o.busy_timeout_ms = busy_timeout_ms
        o.read_only = 1 if read_only else 0
        p = ctypes.c_void_p()
        check(L.tsync_store_open(ctypes.byref(p), enc(self.path), ctypes.byref(o)))
        self._p = p

    # ------------------------------------------------------------------ lifetime

    def close(self):
        """Closes the store (idempotent). Unsealed changes stay in the database."""
        if self._p is not None and self._p.value:
            _lib.lib().tsync_store_free(self._p)
        self._p = None

    @property
    def closed(self):
        return self._p is None

    def _h(self):
        if self._p is None:
            raise errors.InvalidError("the store of %s is closed" % self.path, -2)
        return self._p

    # ------------------------------------------------------------------ identity

    @property
    def site_id(self):
        """This database's site id on this device, 32 hex digits."""
        p = _lib.lib().tsync_store_site_id(self._h())
        return bytes(p[: _lib.SITE_ID_BYTES]).hex()

    @property
    def public_key(self):
        """This device's public key, 64 hex digits (what a static peer "tcp://H:P#KEY" names)."""
        out = (ctypes.c_uint8 * _lib.PUBLIC_KEY_BYTES)()
        check(_lib.lib().tsync_store_public_key(out, self._h()))
        return bytes(out).hex()

    # ------------------------------------------------------------------ tables and SQL

    def replicate(self, table, counters=()):
        """Makes an existing table replicated; counters: names of INTEGER columns that are
        PN-counters (concurrent increments add up). Raises NotFoundError, UnsupportedError (the
        message says what to change), ExistsError (already replicated)."""
        names = [enc(c) for c in counters]
        arr = (ctypes.c_char_p * max(1, len(names)))(*names)
        check(_lib.lib().tsync_store_replicate(self._h(), enc(table), arr, len(names)))

    def execute(self, sql, names=False):
        """Runs SQL (one or more statements) on the store's own connection, then seals. Returns
        the rows of the statements that return rows, each a tuple of str (None for NULL, blobs as
        hex), or a dict by column name with names=True. Raises InvalidError with SQLite's
        message on an SQL error."""
        rows = []

        def row(_ctx, n, cols, vals):
            # Runs inside the call, on this thread; only copies, so it cannot raise.
            vs = tuple(
                None if vals[i] is None else vals[i].decode("utf-8", "replace") for i in range(n)
            )
            if names:
                vs = dict(zip((cols[i].decode("utf-8", "replace") for i in range(n)), vs))
            rows.append(vs)
            return 0

        cb = _lib.ROW_CB(row)
        check(_lib.lib().tsync_store_exec(self._h(), enc(sql), cb, None))
        return rows

    def connect(self, **kwargs):
        """A new connection of Python's sqlite3 module to this database, for the app's own SQL
        (parameters, transactions, typed values). Writes to replicated tables through it are
        captured by the triggers and sealed by the next seal() (or a running node). The
        connection is the caller's; uuid7() exists only on the store's connection (execute)."""
        kwargs.setdefault("timeout", 10.0)  # wait for other writers as the store does
        return sqlite3.connect(self.path, **kwargs)

    def seal(self):
        """Seals committed local changes into signed batches; returns how many (0: none)."""
        n = ctypes.c_size_t()
        check(_lib.lib().tsync_store_seal(self._h(), ctypes.byref(n)))
        return n.value

    def hash(self, table=None):
        """BLAKE2b-256 of the visible content of the replicated tables (or of one), 64 hex
        digits: equal on two replicas exactly when they show the same rows."""
        out = (ctypes.c_uint8 * _lib.HASH_BYTES)()
        check(_lib.lib().tsync_store_hash(out, self._h(), enc(table)))
        return bytes(out).hex()

    # ------------------------------------------------------------------ JSON reports

    def _json(self, fn, *args):
        p = ctypes.c_void_p()
        check(fn(ctypes.byref(p), self._h(), *args))
        return json.loads(_lib.take_string(p))

    def state(self):
        """This database's state (dict): site, clock, version vector with head hashes...; what
        bundle(since=...) takes from a peer."""
        return self._json(_lib.lib().tsync_store_state_json)

    def status(self, parked_max=20):
        """The database's status (dict; docs/NODE.md "Status"): held, parked, conflicts, forks,
        unsealed, "state" ("ok" or "attention"), schema mismatches, the first parked_max parked
        changes..."""
        return self._json(_lib.lib().tsync_store_status_json, parked_max)

    def conflicts(self):
        """The recorded conflicts (list of dicts)."""
        return self._json(_lib.lib().tsync_store_conflicts_json)

    def log(self):
        """The batch log (dict): batches, bytes, policy, horizon, behind."""
        return self._json(_lib.lib().tsync_store_log_json)

    def trust(self):
        """The trust state (dict): shop, certificates, revocations (tillsync/trust.h)."""
        return self._json(_lib.lib().tsync_trust_json)

    def trust_request(self, device_name=None):
        """An enrolment request for this device (bytes) to give the shop key's holder."""
        p, n = ctypes.c_void_p(), ctypes.c_size_t()
        check(
            _lib.lib().tsync_trust_request(
                ctypes.byref(p), ctypes.byref(n), self._h(), enc(device_name)
            )
        )
        return _lib.take_bytes(p, n.value)

    def enrol(self, *records):
        """Installs certificates (bytes, from ShopKey.sign_request) and admin key rotations in
        one transaction: the first enrols this database in its shop. Returns an EnrolReport.
        Raises RefusedError (the message says which rule and which key), BadSignatureError,
        CorruptError."""
        from . import trust

        return trust.enrol(self._h(), records)

    def enrol_with_key(self, shop_key, days=0, device_name=None):
        """The one-machine case: request, sign with shop_key (a ShopKey) and install this
        device's certificate (valid days, 0: 365). Returns an EnrolReport."""
        from . import trust

        return trust.enrol_with_key(self._h(), shop_key, days, device_name)

    # ------------------------------------------------------------------ bundles

    @staticmethod
    def _since(since):
        if since is None or isinstance(since, (str, bytes)):
            return enc(since)
        return enc(json.dumps(since))

    def bundle(self, since=None):
        """Seals, then returns a bundle (bytes) of the batches a peer whose state() is since
        (dict or JSON text) lacks; all batches when since is None."""
        p, n = ctypes.c_void_p(), ctypes.c_size_t()
        check(
            _lib.lib().tsync_store_bundle(
                ctypes.byref(p), ctypes.byref(n), self._h(), self._since(since), None
            )
        )
        return _lib.take_bytes(p, n.value)

    def bundle_file(self, path, since=None):
        """Like bundle, into the file at path (written whole or not at all); returns the number
        of batches."""
        n = ctypes.c_size_t()
        check(
            _lib.lib().tsync_store_bundle_file(
                self._h(), enc(path), self._since(since), ctypes.byref(n)
            )
        )
        return n.value

    def _merge(self, fn, arg, length=None):
        L = _lib.lib()
        r = _lib.init_struct(_lib.MergeReport, "tsync_merge_report_init")
        try:
            args = (self._h(), arg) + ((length,) if length is not None else ())
            rc = fn(*args, ctypes.byref(r))
            report = MergeReport(r)
            if rc != 0:
                raise errors.from_last(rc, report=report)
            return report
        finally:
            L.tsync_merge_report_clear(ctypes.byref(r))

    def merge(self, bundle):
        """Verifies and merges a bundle (bytes); returns a MergeReport. A refused bundle raises
        (CorruptError, BadSignatureError, ChainError, VersionError, ForkError...) with the
        report as the exception's .report."""
        buf = ctypes.create_string_buffer(bytes(bundle), len(bundle))
        ptr = ctypes.cast(buf, ctypes.c_void_p)
        return self._merge(_lib.lib().tsync_store_merge, ptr, len(bundle))

    def merge_file(self, path):
        """Like merge, for the bundle in the file at path, with bounded memory."""
        return self._merge(_lib.lib().tsync_store_merge_file, enc(path))

    def prune(self):
        """Prunes the batch log to its policy now; returns how many log rows went."""
        n = ctypes.c_size_t()
        check(_lib.lib().tsync_store_prune(self._h(), ctypes.byref(n)))
        return n.value

    # ------------------------------------------------------------------ backup

    def backup(self, path, passphrase=None, kdf_opslimit=0, kdf_memlimit=0):
        """Backs the database up into one verified file at path (encrypted with passphrase);
        returns the backup's manifest (dict). Other connections keep writing meanwhile.
        kdf_opslimit, kdf_memlimit: Argon2id cost of the passphrase (0: libsodium's MODERATE,
        about a second and 256 MiB)."""
        o = _lib.init_struct(_lib.BackupOptions, "tsync_backup_options_init")
        o.passphrase = enc(passphrase)
        o.kdf_opslimit = kdf_opslimit
        o.kdf_memlimit = kdf_memlimit
        p = ctypes.c_void_p()
        check(_lib.lib().tsync_backup(self._h(), enc(path), ctypes.byref(o), ctypes.byref(p)))
        return json.loads(_lib.take_string(p))

    # ------------------------------------------------------------------ import / export

    def export(self, path=None, table=None, query=None, format=None):
        """Writes the rows of a table, or of one read-only query, as CSV, JSON or NDJSON
        (format: "csv", "json", "ndjson"; default: guessed from path, else CSV). With path, into
        that file, returning the number of rows; without, returns the text."""
        if (table is None) == (query is None):
            raise errors.InvalidError("export: give exactly one of table and query", -2)
        o = _lib.init_struct(_lib.ExportOptions, "tsync_export_options_init")
        o.format = _format(format, path)
        c = _lib.libc()
        n = ctypes.c_size_t()
        if path is not None:
            f = _fopen(path, b"wb")
            try:
                check(
                    _lib.lib().tsync_store_export(
                        ctypes.byref(n), self._h(), enc(table), enc(query), f, ctypes.byref(o)
                    )
                )
            finally:
                c.fclose(f)
            return n.value
        buf, size = ctypes.c_void_p(), ctypes.c_size_t()
        f = c.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not f:
            raise errors.NoMemoryError("export: open_memstream failed", -3)
        try:
            rc = _lib.lib().tsync_store_export(
                ctypes.byref(n), self._h(), enc(table), enc(query), f, ctypes.byref(o)
            )
            if rc != 0:
                raise errors.from_last(rc)
        finally:
            c.fclose(f)  # sets buf and size
            text = ctypes.string_at(buf, size.value).decode("utf-8") if buf.value else ""
            c.free(buf)
        return text

    def import_(self, table, path=None, data=None, format=None, skip_bad=False, rejects=None):
        """Upserts the rows of a CSV, JSON or NDJSON file (path) or text (data: str or bytes)
        into table, in one transaction, then seals. Returns an ImportReport. Without skip_bad,
        one bad value changes nothing and raises RefusedError (its .report lists every bad
        value); with skip_bad the good rows are imported and the bad ones written to the file
        rejects (when given)."""
        if (path is None) == (data is None):
            raise errors.InvalidError("import: give exactly one of path and data", -2)
        o = _lib.init_struct(_lib.ImportOptions, "tsync_import_options_init")
        o.format = _format(format, path)
        o.name = enc(os.fspath(path) if path is not None else "-")
        o.skip_bad = 1 if skip_bad else 0
        bad = []

        def on_bad(_ctx, msg):
            bad.append(msg.decode("utf-8", "replace"))  # only copies: cannot raise

        cb = _lib.IO_BAD_CB(on_bad)
        o.bad = cb
        r = _lib.init_struct(_lib.ImportReport, "tsync_import_report_init")
        c = _lib.libc()
        keep = None
        rej = None
        if path is not None:
            f = _fopen(path, b"rb")
        else:
            raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            if raw:
                keep = ctypes.create_string_buffer(raw, len(raw))
                f = c.fmemopen(keep, len(raw), b"rb")
            else:
                f = c.fopen(b"/dev/null", b"rb")
            if not f:
                raise errors.NoMemoryError("import: fmemopen failed", -3)
        try:
            if rejects is not None:
                rej = _fopen(rejects, b"wb")
                o.rejects = rej
            rc = _lib.lib().tsync_store_import(
                ctypes.byref(r), self._h(), enc(table), f, ctypes.byref(o)
            )
            report = ImportReport(r, bad)
            if rc != 0:
                raise errors.from_last(rc, report=report)
            return report
        finally:
            c.fclose(f)
            if rej:
                c.fclose(rej)
            del keep


# ---------------------------------------------------------------------- files, no store


def backup_encrypted(path):
    """Whether the backup file at path is encrypted (reads its header only)."""
    enc_ = ctypes.c_int()
    check(_lib.lib().tsync_backup_encrypted(ctypes.byref(enc_), enc(path)))
    return bool(enc_.value)


def backup_check(path, passphrase=None):
    """Verifies a backup file without restoring it; returns its manifest (dict). Raises
    CorruptError (damaged, truncated, altered), BadSignatureError (wrong passphrase),
    InvalidError (encrypted and no passphrase)."""
    p = ctypes.c_void_p()
    check(_lib.lib().tsync_backup_check(enc(path), enc(passphrase), ctypes.byref(p)))
    return json.loads(_lib.take_string(p))


def restore(db_path, backup_path, passphrase=None, key_path=None):
    """Replaces the database at db_path with the backup (verified whole first; the live database
    is untouched on any error). Refused with BusyError while any connection has it open: close
    every Store and Node on it first. Returns a RestoreReport."""
    o = _lib.init_struct(_lib.RestoreOptions, "tsync_restore_options_init")
    o.passphrase = enc(passphrase)
    o.key_path = enc(key_path)
    return restore_call(_lib.lib().tsync_restore, enc(db_path), enc(backup_path), ctypes.byref(o))


def restore_call(fn, *args):
    """fn(*args, tsync_restore_report *) as a RestoreReport (the report's strings freed)."""
    r = _lib.init_struct(_lib.RestoreReport, "tsync_restore_report_init")
    try:
        check(fn(*args, ctypes.byref(r)))
        return RestoreReport(r)
    finally:
        _lib.lib().tsync_restore_report_clear(ctypes.byref(r))


def open(path, create=False, **kwargs):  # noqa: A001 (the package's own open, as sqlite3.connect)
    """Store(path, create, ...)."""
    return Store(path, create=create, **kwargs)
