#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_sqlite_ext.sh — the loadable SQLite extension tillsync.so in the stock sqlite3
# shell (`.load`) and in Debian's /usr/bin/python3 sqlite3 module (load_extension): the README's
# `id TEXT PRIMARY KEY DEFAULT (uuid7())` on a connection tillsync did not open (fails without
# the extension, works with it), tillsync_replicate, tillsync_seal, tillsync_hash equal to
# `tillsync hash`, the tables tillsync_status and tillsync_conflicts, errors carrying tillsync's
# message, writers refused inside an open transaction, and a write made from Python, sealed there,
# reaching another database through `tillsync bundle` / `tillsync merge`.
#
# usage: sh tests/cli/cli_sqlite_ext.sh PATH/TO/tillsync
# The extension: $TSYNC_SQLITE_EXT (ctest sets it), else ext/tillsync.so beside the tool.
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"
EXT=${TSYNC_SQLITE_EXT:-$(dirname "$T")/ext/tillsync.so}
PY=/usr/bin/python3
SHELL_SQLITE=$(command -v sqlite3) || {
    bad "the sqlite3 shell is not installed (Debian package sqlite3: scripts/install-deps.sh)"
    finish
}
[ -f "$EXT" ] || {
    bad "no extension at $EXT"
    finish
}
# host COMMAND...: the sqlite3 shell or Python, which load the extension. An extension built with
# ASan (TSYNC_SANITIZE) needs ASan's runtime loaded first (ctest gives its path); its leaks are
# the criterion test's to find (test_sqlite_register), not those of the host's own exit.
host() {
    if [ -n "${TSYNC_SQLITE_EXT_PRELOAD:-}" ]; then
        env LD_PRELOAD="$TSYNC_SQLITE_EXT_PRELOAD" ASAN_OPTIONS=detect_leaks=0 "$@"
    else
        "$@"
    fi
}
# .load takes the path without its suffix, as an app would write it.
EXT_NOSUFFIX=${EXT%.so}

# check DESC: the last run succeeded.
check() {
    if [ "$rc" -ne 0 ]; then bad "$1: exit status $rc: $(head -c 400 "$W/err")"; else ok; fi
}
# same DESC GOT WANT
same() {
    if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi
}
# shell DB SQL: the sqlite3 shell with the extension loaded; stdout $W/out, stderr $W/err.
shell() {
    printf '.bail on\n.load %s\n%s\n' "$EXT_NOSUFFIX" "$2" >"$W/in.sql"
    run host "$SHELL_SQLITE" -batch "$1" <"$W/in.sql"
}

must "$T" init "$W/a.db"
must "$T" init "$W/b.db"
TABLE="CREATE TABLE sales(id TEXT PRIMARY KEY DEFAULT (uuid7()), item TEXT, qty INTEGER NOT NULL DEFAULT 0);"

# ---------------------------------------------------------------- the shell
# Without the extension the README's DEFAULT (uuid7()) fails on the shell's connection...
run "$SHELL_SQLITE" -batch "$W/a.db" "$TABLE INSERT INTO sales(item) VALUES ('x');"
if [ "$rc" -ne 0 ] && grep -q "uuid7" "$W/err"; then ok; else
    bad "without .load an insert using uuid7() should fail: rc $rc: $(cat "$W/err")"
fi
# ...with it, it works (the table was created by the failed run: CREATE committed alone).
shell "$W/a.db" "INSERT INTO sales(item, qty) VALUES ('tea', 2);
SELECT tillsync_replicate('sales', 'qty');
INSERT INTO sales(item, qty) VALUES ('coffee', 1);
SELECT length(id), substr(id, 15, 1) FROM sales WHERE item = 'coffee';
SELECT tillsync_seal();"
check "shell: .load, uuid7() default, replicate, seal"
same "shell output" "$(tr '\n' ' ' <"$W/out")" "1 36|7 1 "
same "tillsync sees two rows" "$("$T" sql "$W/a.db" "SELECT count(*) FROM sales")" "2"

shell "$W/a.db" "SELECT unsealed, state, conflicts, length(site) FROM tillsync_status;
SELECT count(*) FROM tillsync_conflicts;
SELECT tillsync_hash(); SELECT tillsync_hash('sales');"
check "shell: status, conflicts, hash"
same "status row" "$(sed -n 1p "$W/out")" "0|ok|0|32"
same "no conflicts" "$(sed -n 2p "$W/out")" "0"
same "tillsync_hash() = tillsync hash" "$(sed -n 3p "$W/out")" "$("$T" hash "$W/a.db")"
same "tillsync_hash('sales') = tillsync hash DB sales" "$(sed -n 4p "$W/out")" \
    "$("$T" hash "$W/a.db" sales)"

# Errors are SQL errors with tillsync's one line.
shell "$W/a.db" "SELECT tillsync_replicate('nope');"
if [ "$rc" -ne 0 ] && grep -q "nope" "$W/err"; then ok; else
    bad "replicate of a missing table: rc $rc: $(cat "$W/err")"
fi
shell "$W/a.db" "BEGIN; INSERT INTO sales(item) VALUES ('open'); SELECT tillsync_seal();"
if [ "$rc" -ne 0 ] && grep -q "transaction open; commit it first" "$W/err"; then ok; else
    bad "seal inside a transaction: rc $rc: $(cat "$W/err")"
fi

# ---------------------------------------------------------------- Python
cat >"$W/app.py" <<'EOF'
import sqlite3, sys
ext, db = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db)
conn.enable_load_extension(True)
conn.load_extension(ext)
conn.enable_load_extension(False)
conn.execute("INSERT INTO sales(item, qty) VALUES ('from python', 7)")
# The module opened a transaction for the INSERT: sealing waits for the commit.
try:
    conn.execute("SELECT tillsync_seal()").fetchone()
    print("seal inside the transaction did not fail")
except sqlite3.OperationalError as e:
    print("refused:", "commit it first" in str(e))
conn.commit()
print("sealed:", conn.execute("SELECT tillsync_seal()").fetchone()[0])
print("unsealed:", conn.execute("SELECT unsealed FROM tillsync_status").fetchone()[0])
try:
    conn.execute("SELECT tillsync_hash('nope')").fetchone()
except sqlite3.OperationalError as e:
    print("error:", e)
print("hash:", conn.execute("SELECT tillsync_hash()").fetchone()[0])
conn.close()
EOF
run host "$PY" "$W/app.py" "$EXT" "$W/a.db"
check "python: load_extension, write, seal"
same "python: seal refused in the open transaction" "$(sed -n 1p "$W/out")" "refused: True"
same "python: one batch sealed" "$(sed -n 2p "$W/out")" "sealed: 1"
same "python: nothing left unsealed" "$(sed -n 3p "$W/out")" "unsealed: 0"
same "python: tillsync's message" "$(sed -n 4p "$W/out")" "error: table nope is not replicated"
same "python: hash = tillsync hash" "$(sed -n 5p "$W/out")" "hash: $("$T" hash "$W/a.db")"

# ---------------------------------------------------------------- to another database
must "$T" sql "$W/b.db" "$TABLE"
must "$T" replicate "$W/b.db" sales --counter qty
run "$T" bundle "$W/a.db" "$W/a.bundle"
check "bundle"
run "$T" merge "$W/b.db" "$W/a.bundle"
check "merge"
same "the Python write reached b" \
    "$("$T" sql "$W/b.db" "SELECT qty FROM sales WHERE item = 'from python'")" "7"
same "a and b hash equal" "$("$T" hash "$W/b.db")" "$("$T" hash "$W/a.db")"
shell "$W/b.db" "SELECT tillsync_hash(); SELECT unsealed FROM tillsync_status;"
check "shell on b"
same "tillsync_hash() on b" "$(sed -n 1p "$W/out")" "$("$T" hash "$W/a.db")"
same "b has nothing unsealed" "$(sed -n 2p "$W/out")" "0"

finish
