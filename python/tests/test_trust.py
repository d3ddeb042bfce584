# SPDX-License-Identifier: Apache-2.0
"""Trust basics: the device key, the trust state, a shop key, a request signed into a
certificate, enrolment (both ways), and refusals carrying the library's message."""

import os
import stat

import pytest

import tillsync
from conftest import make_store


def test_device_key_and_request(store):
    assert store.trust()["enrolled"] is False
    key = store.public_key
    assert len(key) == 64 and int(key, 16) >= 0
    req = store.trust_request("till-1")
    assert isinstance(req, bytes) and len(req) > 32
    assert bytes.fromhex(key) in req


def test_shop_key_sign_and_enrol(tmp_path):
    kpath = tmp_path / "shop.key"
    with tillsync.ShopKey.create(kpath, "Corner Shop") as k:
        assert stat.S_IMODE(os.stat(kpath).st_mode) == 0o600
        with pytest.raises(tillsync.ExistsError):
            tillsync.ShopKey.create(kpath, "Again")
        with make_store(tmp_path / "a.db") as a, make_store(tmp_path / "b.db") as b:
            cert = k.sign_request(a.trust_request("till-a"), days=30)
            r = a.enrol(cert)
            assert r.first and r.own and r.shop_name == "Corner Shop" and r.device_name == "till-a"
            t = a.trust()
            assert t["enrolled"] is True
            # The certificate of a is not b's: b cannot enrol with it.
            with pytest.raises(tillsync.RefusedError) as ei:
                b.enrol(cert)
            assert ei.value.message and ei.value.name == "TSYNC_EREFUSED"
            with pytest.raises(tillsync.CorruptError):
                b.enrol(b"not a record")
    with tillsync.ShopKey.load(kpath) as k2, make_store(tmp_path / "c.db") as c:
        r = c.enrol_with_key(k2, device_name="till-c")
        assert r.first and r.device_name == "till-c" and r.shop_name == "Corner Shop"
    os.chmod(kpath, 0o644)
    with pytest.raises(tillsync.InvalidError) as ei:
        tillsync.ShopKey.load(kpath)
    assert str(kpath) in ei.value.message
