# SPDX-License-Identifier: Apache-2.0
"""The exceptions: one class per tillsync error code (include/tillsync/common.h), all under
TillsyncError, each carrying the library's one-line message and its code.

    try:
        store.replicate("orders")
    except tillsync.NotFoundError as e:
        print(e.code, e.name, e.message)   # -4 TSYNC_ENOTFOUND no such table: orders

LibraryError (no library, or one of another ABI) has code None: nothing was called.
"""

CODES = {
    -1: "TSYNC_ERROR",
    -2: "TSYNC_EINVAL",
    -3: "TSYNC_ENOMEM",
    -4: "TSYNC_ENOTFOUND",
    -5: "TSYNC_EEXISTS",
    -6: "TSYNC_EIO",
    -7: "TSYNC_EBADSIG",
    -8: "TSYNC_ECORRUPT",
    -9: "TSYNC_EVERSION",
    -10: "TSYNC_ECLOCKSKEW",
    -11: "TSYNC_EFORK",
    -12: "TSYNC_ECHAIN",
    -13: "TSYNC_EUNSUPPORTED",
    -14: "TSYNC_EBUSY",
    -15: "TSYNC_EREFUSED",
    -16: "TSYNC_EFULL",
}


class TillsyncError(Exception):
    """A tillsync call failed. code: the TSYNC_E* value (negative int), name: its name,
    message: the library's one line naming what was wrong."""

    code = -1

    def __init__(self, message, code=None):
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)

    @property
    def name(self):
        return CODES.get(self.code, "TSYNC_ERROR") if self.code is not None else None

    def __str__(self):
        if self.code is None:
            return self.message
        return "%s (%s)" % (self.message, self.name)


class LibraryError(TillsyncError):
    """The shared library cannot be loaded, or is of another ABI generation."""

    code = None


class InvalidError(TillsyncError):
    code = -2


class NoMemoryError(TillsyncError):
    code = -3


class NotFoundError(TillsyncError):
    code = -4


class ExistsError(TillsyncError):
    code = -5


class TillsyncIOError(TillsyncError):
    """TSYNC_EIO: an operating-system or SQLite I/O error."""

    code = -6


class BadSignatureError(TillsyncError):
    code = -7


class CorruptError(TillsyncError):
    code = -8


class VersionError(TillsyncError):
    code = -9


class ClockSkewError(TillsyncError):
    code = -10


class ForkError(TillsyncError):
    code = -11


class ChainError(TillsyncError):
    code = -12


class UnsupportedError(TillsyncError):
    code = -13


class BusyError(TillsyncError):
    code = -14


class RefusedError(TillsyncError):
    code = -15


class FullError(TillsyncError):
    code = -16


_BY_CODE = {
    c.code: c
    for c in (
        InvalidError,
        NoMemoryError,
        NotFoundError,
        ExistsError,
        TillsyncIOError,
        BadSignatureError,
        CorruptError,
        VersionError,
        ClockSkewError,
        ForkError,
        ChainError,
        UnsupportedError,
        BusyError,
        RefusedError,
        FullError,
    )
}


def make(code, message):
    """The exception for a code (TillsyncError for TSYNC_ERROR or a code this package lacks)."""
    cls = _BY_CODE.get(code, TillsyncError)
    return cls(message, code)


def from_last(rc, what=None, report=None):
    """The exception for a call that returned rc, with tsync_error_last()'s message when it is
    the record of that failure (same code), else the code's description; report (a refused
    merge's or import's) becomes its .report."""
    from . import _lib

    lib = _lib.lib()
    err = lib.tsync_error_last().contents
    if err.code == rc and err.message:
        msg = err.message.decode("utf-8", "replace")
    else:
        msg = lib.tsync_strerror(rc).decode("utf-8", "replace")
        if what:
            msg = "%s: %s" % (what, msg)
    e = make(rc, msg)
    if report is not None:
        e.report = report
    return e
