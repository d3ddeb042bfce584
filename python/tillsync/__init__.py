# SPDX-License-Identifier: Apache-2.0
"""tillsync: keep the SQLite databases of a shop's tills in sync, peer to peer.

A pure-Python binding (ctypes) of the shared library libtillsync.so.0; see python/README.md.

    import tillsync
    with tillsync.Store("till1.db", create=True) as s:
        s.execute("CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER)")
        s.replicate("products", counters=["stock"])

The library is found through $TILLSYNC_LIBRARY (a path), else the system's libtillsync.so.0, and
loaded on first use; library_version() and abi_version() load it.
"""

from . import _lib
from ._version import __version__
from .errors import (
    BadSignatureError,
    BusyError,
    ChainError,
    ClockSkewError,
    CorruptError,
    ExistsError,
    ForkError,
    FullError,
    InvalidError,
    LibraryError,
    NoMemoryError,
    NotFoundError,
    RefusedError,
    TillsyncError,
    TillsyncIOError,
    UnsupportedError,
    VersionError,
)
from .node import LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARN, Change, Log, Node, Peer, PeerState
from .trust import EnrolReport, ShopKey
from .store import (
    SYNC_FULL,
    SYNC_NORMAL,
    ImportReport,
    MergeReport,
    RestoreReport,
    Store,
    backup_check,
    backup_encrypted,
    restore,
)
from .store import open as _open
from .vault import (
    VaultEntry,
    VaultReport,
    vault_backup,
    vault_delete,
    vault_keep,
    vault_list,
    vault_restore,
)

# tillsync.open(path, create=False, ...), as sqlite3.connect; not in __all__, so that
# `from tillsync import *` leaves the builtin open alone.
open = _open


def library_version():
    """tsync_version() of the loaded library, "MAJOR.MINOR.PATCH"."""
    return _lib.lib().tsync_version().decode()


def abi_version():
    """tsync_abi_version() of the loaded library (the N of libtillsync.so.N)."""
    return _lib.lib().tsync_abi_version()


def library_path():
    """The file the library was loaded from (as given to the loader)."""
    return _lib.lib()._name


__all__ = [
    "__version__",
    "Store",
    "Node",
    "backup_check",
    "backup_encrypted",
    "restore",
    "vault_backup",
    "vault_list",
    "vault_restore",
    "vault_delete",
    "vault_keep",
    "VaultEntry",
    "VaultReport",
    "library_version",
    "abi_version",
    "library_path",
    "MergeReport",
    "ImportReport",
    "RestoreReport",
    "ShopKey",
    "EnrolReport",
    "Change",
    "Peer",
    "PeerState",
    "Log",
    "SYNC_NORMAL",
    "SYNC_FULL",
    "LOG_ERROR",
    "LOG_WARN",
    "LOG_INFO",
    "LOG_DEBUG",
    "TillsyncError",
    "LibraryError",
    "InvalidError",
    "NoMemoryError",
    "NotFoundError",
    "ExistsError",
    "TillsyncIOError",
    "BadSignatureError",
    "CorruptError",
    "VersionError",
    "ClockSkewError",
    "ForkError",
    "ChainError",
    "UnsupportedError",
    "BusyError",
    "RefusedError",
    "FullError",
]
