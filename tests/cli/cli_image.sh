#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_image.sh — an old copy written back over a live till's files (issue 10, defect 6).
# Two tills sync live; a copy of till a's database is taken; a sells more, and those sales reach b;
# a stops and the old copy is written back over its database with `cp` (same path, same inode,
# the -wal/-shm of the newer state removed as an image revert leaves them); a runs again and sells.
# Till a must notice that its log went back, take a new incarnation, get its lost sales back from
# b, and both tills must end with every sale and hash equal; `status` (text and --json) on a must
# report the rollback. Two cases:
#   file:  only the database file is copied back (the marker beside the key file still knows the
#          highest batch a sent out: caught at open, before a writes anything);
#   image: the whole directory is copied back (key file and marker too, as a VM snapshot revert or
#          a disk image restore does): caught when b shows a the batches of its own site that it
#          lacks; a has meanwhile sold on the old branch, so both branches must end on both tills
#          and the fork is reported on both.
#
# usage: sh tests/cli/cli_image.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

site_of() { "$T" state "$1" --json | sed -n 's/.*"site": "\([0-9a-f]*\)".*/\1/p' | head -1; }
stock_is() { [ "$("$T" sql "$1" "SELECT qty FROM stock WHERE id='tea'")" = "$2" ]; }
same_hash() { [ "$("$T" hash "$W/$1/a.db")" = "$("$T" hash "$W/$1/b.db")" ]; }

# start_a CASE / start_b CASE: a listens, b dials a.
start_a() {
    rm -f "$W/$1/a.db.node"
    "$T" run "$W/$1/a.db" --listen "${EA:-tcp://127.0.0.1:*}" 2>>"$W/$1/a.log" &
    PA=$!
    PIDS="$PIDS $PA"
    wait_for 10 has_listen "$W/$1/a.db" || bad "$1: node a wrote no endpoint: $(tail -5 "$W/$1/a.log")"
    EA=$(listen_of "$W/$1/a.db")
}
stop_a() {
    kill -TERM "$PA"
    wait "$PA" || bad "$1: node a did not stop cleanly: $(tail -3 "$W/$1/a.log")"
}
sell() { # sell CASE ID: one sale on a, one unit of tea off the stock counter
    must "$T" sql "$W/$1/a.db" "INSERT INTO sales VALUES('$2', 'tea', 240); UPDATE stock SET qty = qty - 1 WHERE id='tea'"
}

run_case() {
    C=$1
    mkdir -p "$W/$C"
    EA=""
    for d in a b; do
        must "$T" init "$W/$C/$d.db"
        must "$T" sql "$W/$C/$d.db" "CREATE TABLE sales(id TEXT PRIMARY KEY, item TEXT, cents INTEGER); CREATE TABLE stock(id TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0)"
        must "$T" replicate "$W/$C/$d.db" sales
        must "$T" replicate "$W/$C/$d.db" stock --counter qty
    done
    must "$T" sql "$W/$C/a.db" "INSERT INTO stock VALUES('tea', 100)"
    KA=$(key_of "$W/$C/a.db")
    start_a "$C"
    "$T" run "$W/$C/b.db" --listen 'tcp://127.0.0.1:*' --peer "$EA#$KA" 2>"$W/$C/b.log" &
    PB=$!
    PIDS="$PIDS $PB"
    wait_for 10 online "$W/$C/b.db" || bad "$C: b never came online: $(tail -5 "$W/$C/b.log")"
    for i in 1 2 3; do sell "$C" "s$i"; done
    wait_for 10 count_is "$W/$C/b.db" 3 || bad "$C: the first sales did not reach b"
    SITE0=$(site_of "$W/$C/a.db")

    # The copy: a stopped, its files as they are (an image or `cp` of the database).
    stop_a "$C"
    mkdir "$W/$C/old"
    cp -p "$W/$C"/a.db "$W/$C"/a.db-wal "$W/$C"/a.db-shm "$W/$C"/a.db.key* "$W/$C/old/" 2>/dev/null
    # Branch X: sales after the copy, which reach b.
    start_a "$C"
    for i in 4 5; do sell "$C" "s$i"; done
    wait_for 10 count_is "$W/$C/b.db" 5 || bad "$C: sales s4, s5 did not reach b"
    wait_for 10 stock_is "$W/$C/b.db" 95 || bad "$C: b's stock is not 95"
    stop_a "$C"
    INO=$(stat -c %i "$W/$C/a.db")
    # Written back: cp over the live file keeps its inode; the newer -wal/-shm go.
    rm -f "$W/$C/a.db-wal" "$W/$C/a.db-shm"
    cp "$W/$C/old/a.db" "$W/$C/a.db"
    [ -e "$W/$C/old/a.db-wal" ] && cp "$W/$C/old/a.db-wal" "$W/$C/a.db-wal"
    [ -e "$W/$C/old/a.db-shm" ] && cp "$W/$C/old/a.db-shm" "$W/$C/a.db-shm"
    if [ "$C" = image ]; then
        for f in "$W/$C"/old/a.db.key*; do cp -p "$f" "$W/$C/"; done
    fi
    [ "$(stat -c %i "$W/$C/a.db")" = "$INO" ] || bad "$C: the copy back changed the inode"
    count_is "$W/$C/a.db" 3 || bad "$C: the old copy does not hold 3 sales"

    # a runs again and sells. In the image case b is away meanwhile, so a cannot know yet and
    # sells on its old site id: branch Y, which forks the old site.
    if [ "$C" = image ]; then
        kill -TERM "$PB"
        wait "$PB" 2>/dev/null
    fi
    start_a "$C"
    sell "$C" s6
    sell "$C" s7
    if [ "$C" = image ]; then
        "$T" run "$W/$C/b.db" --listen 'tcp://127.0.0.1:*' --peer "$EA#$KA" 2>>"$W/$C/b.log" &
        PB=$!
        PIDS="$PIDS $PB"
    fi
    wait_for 15 count_is "$W/$C/a.db" 7 && ok ||
        bad "$C: a lacks its lost sales: $("$T" sql "$W/$C/a.db" "SELECT id FROM sales ORDER BY id" | tr '\n' ' ') $(grep -i 'refused\|fork\|went back' "$W/$C/a.log" | tail -3)"
    wait_for 15 count_is "$W/$C/b.db" 7 && ok ||
        bad "$C: b lacks sales: $("$T" sql "$W/$C/b.db" "SELECT id FROM sales ORDER BY id" | tr '\n' ' ')"
    wait_for 10 stock_is "$W/$C/a.db" 93 && ok ||
        bad "$C: a's stock is $("$T" sql "$W/$C/a.db" "SELECT qty FROM stock"), want 93"
    wait_for 10 stock_is "$W/$C/b.db" 93 && ok ||
        bad "$C: b's stock is $("$T" sql "$W/$C/b.db" "SELECT qty FROM stock"), want 93"
    wait_for 10 same_hash "$C" && ok || bad "$C: a and b hash differently"
    # a sells once more: the sale reaches b (a's new identity is accepted).
    sell "$C" s8
    wait_for 10 count_is "$W/$C/b.db" 8 && ok || bad "$C: a's sale after the rollback did not reach b"
    SITE1=$(site_of "$W/$C/a.db")
    [ -n "$SITE1" ] && [ "$SITE1" != "$SITE0" ] && ok ||
        bad "$C: a kept its site id $SITE0 after its log went back"
    "$T" status "$W/$C/a.db" >"$W/$C/st" 2>&1
    grep -q "rollback" "$W/$C/st" && grep -q "new incarnation" "$W/$C/st" && ok ||
        bad "$C: a's status does not report the rollback: $(cat "$W/$C/st")"
    "$T" status "$W/$C/a.db" --json >"$W/$C/stj" 2>&1
    grep -q '"rollbacks": 1' "$W/$C/stj" && ok ||
        bad "$C: a's status --json does not count one rollback: $(grep -i roll "$W/$C/stj")"
    grep -q "went back" "$W/$C/a.log" && ok || bad "$C: a did not log the rollback: $(tail -5 "$W/$C/a.log")"
    if [ "$C" = image ]; then
        # a sold on the old branch before it knew: a fork of its old site, seen on both tills.
        grep -q "forks [1-9]" "$W/$C/st" && ok || bad "$C: a's status shows no fork: $(grep forks "$W/$C/st")"
        "$T" status "$W/$C/b.db" | grep -q "forks [1-9]" && ok || bad "$C: b's status shows no fork"
    fi
    stop_a "$C"
    kill -TERM "$PB"
    wait "$PB" 2>/dev/null
    PIDS=""
}

run_case file
run_case image
finish
