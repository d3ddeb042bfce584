# SPDX-License-Identifier: Apache-2.0
"""The ctypes layer: finds libtillsync.so.0, checks its ABI generation, and declares the C
structs and function prototypes of include/tillsync/*.h that the package uses.

Only this module knows C. Every struct mirrors its header at the version named in
*_VERSION below, and is filled by the library's own tsync_<struct>_init(out, version) (net/ffi.c),
which writes exactly that version's bytes, so no default is copied from a macro by hand.

ctypes releases the GIL around every foreign call (CDLL, not PyDLL), so a blocking call such as
tsync_node_stop (it joins the node's thread) never holds up the node's thread when that thread
calls back into Python.
"""

import ctypes
import os
import threading

from . import errors

# The ABI generation this package is written for: the N of libtillsync.so.N, TSYNC_VERSION_ABI.
ABI = 0
SONAME = "libtillsync.so.%d" % ABI

c_int = ctypes.c_int
c_int32 = ctypes.c_int32
c_int64 = ctypes.c_int64
c_uint32 = ctypes.c_uint32
c_uint64 = ctypes.c_uint64
c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
POINTER = ctypes.POINTER

HASH_BYTES = 32
SITE_ID_BYTES = 16
PUBLIC_KEY_BYTES = 32
NODE_ERROR_LEN = 1024


class Error(ctypes.Structure):
    _fields_ = [("code", c_int32), ("message", c_char_p)]


class StoreOptions(ctypes.Structure):
    VERSION = 2
    _fields_ = [
        ("version", c_uint32),
        ("create", c_int32),
        ("synchronous", c_int32),
        ("key_path", c_char_p),
        ("busy_timeout_ms", c_uint32),
        ("read_only", c_int32),
    ]


class MergeReport(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("merged", c_size_t),
        ("duplicates", c_size_t),
        ("held", c_size_t),
        ("parked", c_size_t),
        ("refused", c_size_t),
        ("conflicts", c_size_t),
        ("nmessages", c_size_t),
        ("messages", POINTER(c_char_p)),
    ]


BACKUP_PROGRESS_CB = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_uint64, c_uint64)


class BackupOptions(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("passphrase", c_char_p),
        ("kdf_opslimit", c_uint64),
        ("kdf_memlimit", c_size_t),
        ("step_pages", c_uint32),
        ("progress", BACKUP_PROGRESS_CB),
        ("progress_ctx", c_void_p),
    ]


class RestoreOptions(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("passphrase", c_char_p),
        ("key_path", c_char_p),
        ("max_kdf_opslimit", c_uint64),
        ("max_kdf_memlimit", c_size_t),
        ("progress", BACKUP_PROGRESS_CB),
        ("progress_ctx", c_void_p),
    ]


class RestoreReport(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("site_id", ctypes.c_uint8 * SITE_ID_BYTES),
        ("backup_site_id", ctypes.c_uint8 * SITE_ID_BYTES),
        ("new_key", c_int32),
        ("manifest_json", c_void_p),  # char *, freed by tsync_restore_report_clear
    ]


VAULT_ID_HEX = 33


class VaultOptions(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("key_path", c_char_p),
        ("timeout_ms", c_int32),
        ("max_chunks", c_uint32),
        ("progress", BACKUP_PROGRESS_CB),
        ("progress_ctx", c_void_p),
        ("stop", c_void_p),  # const volatile sig_atomic_t *: not used from Python (NULL)
    ]


class VaultEntry(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_char * VAULT_ID_HEX),
        ("created_ms", c_uint64),
        ("size", c_uint64),
        ("chunks", c_uint32),
        ("epoch", c_uint32),
        ("origin", ctypes.c_uint8 * SITE_ID_BYTES),
        ("hash", ctypes.c_uint8 * HASH_BYTES),
    ]


class VaultReport(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("backup", VaultEntry),
        ("chunks_sent", c_uint32),
        ("chunks_held", c_uint32),
        ("resumed", c_int32),
        ("complete", c_int32),
        ("relay", ctypes.c_char * 128),
    ]


IO_PROGRESS_CB = ctypes.CFUNCTYPE(None, c_void_p, c_uint64)
IO_BAD_CB = ctypes.CFUNCTYPE(None, c_void_p, c_char_p)


class ExportOptions(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("format", c_int32),
        ("progress", IO_PROGRESS_CB),
        ("progress_ctx", c_void_p),
        ("progress_every", c_uint64),
    ]


class ImportOptions(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("format", c_int32),
        ("name", c_char_p),
        ("skip_bad", c_int32),
        ("rejects", c_void_p),  # FILE *
        ("bad", IO_BAD_CB),
        ("progress", IO_PROGRESS_CB),
        ("ctx", c_void_p),
        ("progress_every", c_uint64),
    ]


class ImportReport(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("rows", c_size_t),
        ("imported", c_size_t),
        ("rejected", c_size_t),
        ("nbad", c_size_t),
    ]


ROW_CB = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, POINTER(c_char_p), POINTER(c_char_p))
LOG_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class NodeChange(ctypes.Structure):
    _fields_ = [("batches", c_size_t), ("conflicts", c_size_t)]


CHANGE_FN = ctypes.CFUNCTYPE(None, c_void_p, POINTER(NodeChange))
PEER_FN = ctypes.CFUNCTYPE(None, c_void_p, c_char_p, c_char_p, c_int, c_int)


class PeerEvent(ctypes.Structure):
    _fields_ = [
        ("key_hex", c_char_p),
        ("address", c_char_p),
        ("name", c_char_p),
        ("state", c_int32),
        ("previous", c_int32),
        ("since_ms", c_uint64),
        ("online", c_int32),
        ("reason", c_char_p),
    ]


PEER_STATE_FN = ctypes.CFUNCTYPE(None, c_void_p, POINTER(PeerEvent))


class NodeOptions(ctypes.Structure):
    VERSION = 3
    _fields_ = [
        ("version", c_uint32),
        ("listen", c_char_p),
        ("peers", POINTER(c_char_p)),
        ("npeers", c_size_t),
        ("log_level", c_int32),
        ("log", LOG_FN),
        ("log_ctx", c_void_p),
        ("on_change", CHANGE_FN),
        ("on_peer", PEER_FN),
        ("cb_ctx", c_void_p),
        ("status_path", c_char_p),
        ("tick_ms", c_int32),
        ("anti_entropy_ms", c_int32),
        ("window_bytes", c_size_t),
        ("seal_ms", c_uint32),
        ("liveness_ms", c_int32),
        ("no_mdns", c_int32),
        ("prune_keep", c_int64),
        ("prune_ms", c_int32),
        ("backup_every_ms", c_uint64),
        ("backup_dir", c_char_p),
        ("backup_keep", c_int32),
        ("on_peer_state", PEER_STATE_FN),
        ("key_path", c_char_p),
    ]


class NodeError(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("code", c_int32),
        ("stopped", c_int32),
        ("count", c_uint64),
        ("at_ms", c_uint64),
        ("message", ctypes.c_char * NODE_ERROR_LEN),
    ]


SHOP_ID_BYTES = 16
TRUST_NAME_MAX = 64


class SignOptions(ctypes.Structure):
    VERSION = 1
    _fields_ = [("version", c_uint32), ("days", c_uint32), ("device_name", c_char_p)]


class EnrolReport(ctypes.Structure):
    VERSION = 1
    _fields_ = [
        ("version", c_uint32),
        ("first", c_int32),
        ("own", c_int32),
        ("shop_id", ctypes.c_uint8 * SHOP_ID_BYTES),
        ("shop_name", ctypes.c_char * (TRUST_NAME_MAX + 1)),
        ("device_name", ctypes.c_char * (TRUST_NAME_MAX + 1)),
        ("expires_ms", c_uint64),
        ("added", c_size_t),
    ]


# name: (restype, argtypes). Every function the package calls, as its header declares it.
_PROTOTYPES = {
    "tsync_abi_version": (c_int, []),
    "tsync_version": (c_char_p, []),
    "tsync_error_last": (POINTER(Error), []),
    "tsync_error_clear": (None, []),
    "tsync_strerror": (c_char_p, [c_int]),
    "tsync_free": (None, [c_void_p]),
    # store.h
    "tsync_store_options_init": (c_int, [POINTER(StoreOptions), c_uint32]),
    "tsync_store_open": (c_int, [POINTER(c_void_p), c_char_p, POINTER(StoreOptions)]),
    "tsync_store_free": (None, [c_void_p]),
    "tsync_store_sqlite": (c_void_p, [c_void_p]),
    "tsync_store_site_id": (POINTER(ctypes.c_uint8), [c_void_p]),
    "tsync_store_replicate": (c_int, [c_void_p, c_char_p, POINTER(c_char_p), c_size_t]),
    "tsync_store_exec": (c_int, [c_void_p, c_char_p, ROW_CB, c_void_p]),
    "tsync_store_seal": (c_int, [c_void_p, POINTER(c_size_t)]),
    "tsync_store_state_json": (c_int, [POINTER(c_void_p), c_void_p]),
    "tsync_store_bundle": (
        c_int,
        [POINTER(c_void_p), POINTER(c_size_t), c_void_p, c_char_p, POINTER(c_size_t)],
    ),
    "tsync_store_bundle_file": (c_int, [c_void_p, c_char_p, c_char_p, POINTER(c_size_t)]),
    "tsync_merge_report_init": (c_int, [POINTER(MergeReport), c_uint32]),
    "tsync_merge_report_clear": (None, [POINTER(MergeReport)]),
    "tsync_store_merge": (c_int, [c_void_p, c_void_p, c_size_t, POINTER(MergeReport)]),
    "tsync_store_merge_file": (c_int, [c_void_p, c_char_p, POINTER(MergeReport)]),
    "tsync_store_hash": (c_int, [POINTER(ctypes.c_uint8), c_void_p, c_char_p]),
    "tsync_store_conflicts_json": (c_int, [POINTER(c_void_p), c_void_p]),
    "tsync_store_prune": (c_int, [c_void_p, POINTER(c_size_t)]),
    # status.h
    "tsync_store_status_json": (c_int, [POINTER(c_void_p), c_void_p, c_size_t]),
    "tsync_store_log_json": (c_int, [POINTER(c_void_p), c_void_p]),
    # trust.h
    "tsync_store_public_key": (c_int, [POINTER(ctypes.c_uint8), c_void_p]),
    "tsync_trust_json": (c_int, [POINTER(c_void_p), c_void_p]),
    "tsync_trust_request": (c_int, [POINTER(c_void_p), POINTER(c_size_t), c_void_p, c_char_p]),
    "tsync_shop_key_create": (c_int, [POINTER(c_void_p), c_char_p, c_char_p]),
    "tsync_shop_key_load": (c_int, [POINTER(c_void_p), c_char_p]),
    "tsync_shop_key_free": (None, [c_void_p]),
    "tsync_sign_options_init": (c_int, [POINTER(SignOptions), c_uint32]),
    "tsync_shop_key_sign_request": (
        c_int,
        [POINTER(c_void_p), POINTER(c_size_t), c_void_p, c_void_p, c_size_t, POINTER(SignOptions)],
    ),
    "tsync_enrol_report_init": (c_int, [POINTER(EnrolReport), c_uint32]),
    "tsync_trust_enrol": (
        c_int,
        [POINTER(EnrolReport), c_void_p, POINTER(c_void_p), POINTER(c_size_t), c_size_t],
    ),
    "tsync_trust_enrol_with_key": (
        c_int,
        [POINTER(EnrolReport), c_void_p, c_void_p, POINTER(SignOptions)],
    ),
    # backup.h
    "tsync_backup_options_init": (c_int, [POINTER(BackupOptions), c_uint32]),
    "tsync_backup": (c_int, [c_void_p, c_char_p, POINTER(BackupOptions), POINTER(c_void_p)]),
    "tsync_backup_encrypted": (c_int, [POINTER(c_int), c_char_p]),
    "tsync_backup_check": (c_int, [c_char_p, c_char_p, POINTER(c_void_p)]),
    "tsync_restore_options_init": (c_int, [POINTER(RestoreOptions), c_uint32]),
    "tsync_restore_report_init": (c_int, [POINTER(RestoreReport), c_uint32]),
    "tsync_restore_report_clear": (None, [POINTER(RestoreReport)]),
    "tsync_restore": (
        c_int,
        [c_char_p, c_char_p, POINTER(RestoreOptions), POINTER(RestoreReport)],
    ),
    # vault.h
    "tsync_vault_options_init": (c_int, [POINTER(VaultOptions), c_uint32]),
    "tsync_vault_report_init": (c_int, [POINTER(VaultReport), c_uint32]),
    "tsync_vault_backup": (c_int, [c_char_p, POINTER(VaultOptions), POINTER(VaultReport)]),
    "tsync_vault_list": (
        c_int,
        [c_char_p, POINTER(VaultOptions), POINTER(POINTER(VaultEntry)), POINTER(c_size_t)],
    ),
    "tsync_vault_restore": (
        c_int,
        [c_char_p, c_char_p, POINTER(VaultOptions), POINTER(RestoreReport)],
    ),
    "tsync_vault_delete": (c_int, [c_char_p, c_char_p, POINTER(VaultOptions)]),
    "tsync_vault_keep": (
        c_int,
        [c_char_p, c_uint32, POINTER(VaultOptions), POINTER(c_uint32)],
    ),
    # io.h
    "tsync_io_format_parse": (c_int, [c_char_p]),
    "tsync_io_format_guess": (c_int, [c_char_p]),
    "tsync_export_options_init": (c_int, [POINTER(ExportOptions), c_uint32]),
    "tsync_store_export": (
        c_int,
        [POINTER(c_size_t), c_void_p, c_char_p, c_char_p, c_void_p, POINTER(ExportOptions)],
    ),
    "tsync_import_options_init": (c_int, [POINTER(ImportOptions), c_uint32]),
    "tsync_import_report_init": (c_int, [POINTER(ImportReport), c_uint32]),
    "tsync_store_import": (
        c_int,
        [POINTER(ImportReport), c_void_p, c_char_p, c_void_p, POINTER(ImportOptions)],
    ),
    # node.h
    "tsync_node_options_init": (c_int, [POINTER(NodeOptions), c_uint32]),
    "tsync_node_new": (c_int, [POINTER(c_void_p), c_char_p, POINTER(NodeOptions)]),
    "tsync_node_start": (c_int, [c_void_p]),
    "tsync_node_stop": (None, [c_void_p]),
    "tsync_node_free": (None, [c_void_p]),
    "tsync_node_status_json": (c_int, [POINTER(c_void_p), c_void_p]),
    "tsync_node_endpoint": (c_char_p, [c_void_p]),
    "tsync_node_error_init": (c_int, [POINTER(NodeError), c_uint32]),
    "tsync_node_last_error": (c_int, [POINTER(NodeError), c_void_p]),
    "tsync_peer_state_name": (c_char_p, [c_int]),
}


def candidates():
    """Where the library is looked for: $TILLSYNC_LIBRARY (a path, and then only it), else the
    SONAME through the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache, the system
    folders). ctypes.util.find_library("tillsync") is not asked: on Linux it answers a SONAME
    (the newest it sees, maybe of another ABI), which the loader would then look up the same way;
    asking for ours directly is the same search, minus its ldconfig and gcc processes."""
    env = os.environ.get("TILLSYNC_LIBRARY")
    return [env] if env else [SONAME]


def load(path=None, abi=ABI):
    """Loads the library (path, else candidates()), checks its ABI generation against abi and
    declares the prototypes. Raises errors.LibraryError with what was tried and why."""
    tried = []
    lib = None
    for cand in [path] if path else candidates():
        try:
            lib = ctypes.CDLL(cand)
            break
        except OSError as e:
            tried.append("%s (%s)" % (cand, e))
    if lib is None:
        raise errors.LibraryError(
            "cannot load the tillsync library: tried %s; install libtillsync%d or set "
            "TILLSYNC_LIBRARY to the path of %s" % ("; ".join(tried), ABI, SONAME)
        )
    try:
        fn = lib.tsync_abi_version
    except AttributeError:
        raise errors.LibraryError(
            "%s is not a tillsync library of ABI %d: it has no tsync_abi_version()"
            % (lib._name, abi)
        ) from None
    fn.restype = c_int
    fn.argtypes = []
    have = fn()
    if have != abi:
        raise errors.LibraryError(
            "%s has ABI generation %d, this tillsync package needs %d (libtillsync.so.%d): "
            "install the matching library or package" % (lib._name, have, abi, abi)
        )
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise errors.LibraryError(
                "%s lacks %s(): it is older than this tillsync package" % (lib._name, name)
            ) from None
        f.restype = restype
        f.argtypes = argtypes
    return lib


_lock = threading.Lock()
_lib = None


def lib():
    """The library, loaded on first use (importing the package loads nothing)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = load()
    return _lib


# --------------------------------------------------------------------------- libc (FILE *)

_libc = None


def libc():
    """The C runtime the process runs with, for the FILE * that io.h takes."""
    global _libc
    if _libc is None:
        c = ctypes.CDLL(None, use_errno=True)
        c.fopen.restype = c_void_p
        c.fopen.argtypes = [c_char_p, c_char_p]
        c.fclose.restype = c_int
        c.fclose.argtypes = [c_void_p]
        c.open_memstream.restype = c_void_p
        c.open_memstream.argtypes = [POINTER(c_void_p), POINTER(c_size_t)]
        c.fmemopen.restype = c_void_p
        c.fmemopen.argtypes = [c_void_p, c_size_t, c_char_p]
        c.free.restype = None
        c.free.argtypes = [c_void_p]
        _libc = c
    return _libc


# --------------------------------------------------------------------------- helpers


def enc(s):
    """A str (or path-like) as bytes for a const char *, None as NULL."""
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return os.fsencode(s) if not isinstance(s, str) else s.encode("utf-8")


def dec(b):
    return None if b is None else b.decode("utf-8", "replace")


def check(rc, what=None):
    """Raises the error of the last failing call on this thread when rc is not 0."""
    if rc != 0:
        raise errors.from_last(rc, what)
    return rc


def take_string(p):
    """A char * the library returned for the caller, as str, freed with tsync_free()."""
    if not p.value:
        return None
    try:
        return ctypes.string_at(p.value).decode("utf-8")
    finally:
        lib().tsync_free(p.value)
        p.value = None


def take_bytes(p, n):
    if not p.value:
        return b""
    try:
        return ctypes.string_at(p.value, n)
    finally:
        lib().tsync_free(p.value)
        p.value = None


def init_struct(cls, init_name):
    """A struct of cls.VERSION filled with the library's defaults by tsync_<struct>_init."""
    s = cls()
    check(getattr(lib(), init_name)(ctypes.byref(s), cls.VERSION), init_name)
    return s
