# SPDX-License-Identifier: Apache-2.0
"""Closing: what Store, ShopKey and Node share around their close(): a with block closes, and so
does garbage collection (where an error can only be ignored)."""


class Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
