# SPDX-License-Identifier: Apache-2.0
"""Finding the library: $TILLSYNC_LIBRARY, a clear error when it is missing, and a refusal of a
library of another ABI generation."""

import os
import subprocess
import sys

import pytest

import tillsync
from tillsync import _lib


def run_python(code, env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60
    )


def test_missing_library_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "libtillsync.so.0")
    r = run_python(
        "import tillsync\n"
        "try:\n"
        "    tillsync.library_version()\n"
        "except tillsync.LibraryError as e:\n"
        "    print('LibraryError', e)\n",
        {"TILLSYNC_LIBRARY": missing},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("LibraryError cannot load the tillsync library"), r.stdout
    assert missing in r.stdout and "TILLSYNC_LIBRARY" in r.stdout


def test_import_loads_nothing(tmp_path):
    # Importing works without a library: only the first call needs it.
    r = run_python(
        "import tillsync; print(tillsync.__version__)",
        {"TILLSYNC_LIBRARY": str(tmp_path / "none.so")},
    )
    assert r.returncode == 0 and r.stdout.strip() == tillsync.__version__, r.stderr


def test_other_abi_generation_is_refused():
    path = tillsync.library_path()
    with pytest.raises(tillsync.LibraryError) as ei:
        _lib.load(path, abi=99)
    msg = str(ei.value)
    assert "ABI generation 0" in msg and "needs 99" in msg and path in msg
    assert ei.value.code is None


def test_not_a_tillsync_library():
    with pytest.raises(tillsync.LibraryError) as ei:
        _lib.load("libc.so.6")
    assert "no tsync_abi_version()" in str(ei.value)
