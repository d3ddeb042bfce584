# SPDX-License-Identifier: Apache-2.0
"""Trust basics (include/tillsync/trust.h): the shop's admin key, certificates for devices, and
enrolling a till's database in its shop. Revocation, rotation and signed migrations stay with
the C API and the `tillsync` tool for now.

A ShopKey holds a secret: keep it on the admin's machine, close it when done (close() wipes it
from memory).
"""

import ctypes

from . import _lib, errors
from ._closing import Closing
from ._lib import check, enc


class EnrolReport:
    """What an enrolment did: first (the database was not enrolled before), own (a certificate of
    this device was among the records), shop_id (hex), shop_name, device_name, expires_ms, added
    (records that were new)."""

    __slots__ = ("first", "own", "shop_id", "shop_name", "device_name", "expires_ms", "added")

    def __init__(self, r):
        self.first, self.own = bool(r.first), bool(r.own)
        self.shop_id = bytes(r.shop_id).hex()
        self.shop_name = r.shop_name.decode("utf-8", "replace")
        self.device_name = r.device_name.decode("utf-8", "replace")
        self.expires_ms, self.added = r.expires_ms, r.added

    def __repr__(self):
        return "EnrolReport(shop_name=%r, device_name=%r, first=%r, added=%d)" % (
            self.shop_name,
            self.device_name,
            self.first,
            self.added,
        )


def sign_options(days=0, device_name=None):
    o = _lib.init_struct(_lib.SignOptions, "tsync_sign_options_init")
    o.days = days
    o.device_name = enc(device_name)
    return o


class ShopKey(Closing):
    """The shop's admin key. ShopKey.create(path, name) makes a new shop (a new key file, 0600,
    never overwritten: ExistsError); ShopKey.load(path) reads one (InvalidError when other users
    can read it). Context manager; close() wipes and frees it."""

    def __init__(self, handle):
        self._p = handle

    @classmethod
    def create(cls, path, name):
        p = ctypes.c_void_p()
        check(_lib.lib().tsync_shop_key_create(ctypes.byref(p), enc(path), enc(name)))
        return cls(p)

    @classmethod
    def load(cls, path):
        p = ctypes.c_void_p()
        check(_lib.lib().tsync_shop_key_load(ctypes.byref(p), enc(path)))
        return cls(p)

    def _h(self):
        if self._p is None:
            raise errors.InvalidError("the shop key is closed", -2)
        return self._p

    def sign_request(self, request, days=0, device_name=None):
        """Verifies a device's enrolment request (Store.trust_request) and returns a certificate
        (bytes) for it, valid for days (0: 365), naming device_name (None: the request's)."""
        o = sign_options(days, device_name)
        req = ctypes.create_string_buffer(bytes(request), len(request))
        p, n = ctypes.c_void_p(), ctypes.c_size_t()
        check(
            _lib.lib().tsync_shop_key_sign_request(
                ctypes.byref(p), ctypes.byref(n), self._h(), req, len(request), ctypes.byref(o)
            )
        )
        return _lib.take_bytes(p, n.value)

    def close(self):
        if self._p is not None:
            _lib.lib().tsync_shop_key_free(self._p)
        self._p = None


def enrol(store_handle, records):
    """tsync_trust_enrol of records (bytes each) into the store; an EnrolReport."""
    recs = [bytes(r) for r in records]
    bufs = [ctypes.create_string_buffer(r, len(r)) for r in recs]
    ptrs = (ctypes.c_void_p * max(1, len(recs)))(*[ctypes.cast(b, ctypes.c_void_p) for b in bufs])
    lens = (ctypes.c_size_t * max(1, len(recs)))(*[len(r) for r in recs])
    r = _lib.init_struct(_lib.EnrolReport, "tsync_enrol_report_init")
    check(_lib.lib().tsync_trust_enrol(ctypes.byref(r), store_handle, ptrs, lens, len(recs)))
    return EnrolReport(r)


def enrol_with_key(store_handle, key, days=0, device_name=None):
    o = sign_options(days, device_name)
    r = _lib.init_struct(_lib.EnrolReport, "tsync_enrol_report_init")
    L = _lib.lib()
    check(L.tsync_trust_enrol_with_key(ctypes.byref(r), store_handle, key._h(), ctypes.byref(o)))
    return EnrolReport(r)
