# SPDX-License-Identifier: Apache-2.0
"""Trust basics: the device key, the trust state, an enrolment request."""


def test_trust_basics(store):
    assert store.trust()["enrolled"] is False
    key = store.public_key
    assert len(key) == 64 and int(key, 16) >= 0
    req = store.trust_request("till-1")
    assert isinstance(req, bytes) and len(req) > 32
    assert bytes.fromhex(key) in req
