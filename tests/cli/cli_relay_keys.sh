#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_relay_keys.sh — tillsync shop grant (docs/RELAY_KEYS.md): the grant is printed
# with its description, installs on an enrolled till with enrol, reaches another till through a
# bundle, shop show describes it, and status shows it with the till's data-key epoch (none here:
# data_key_missing); bad relays, keys, quotas and days are refused with one line.
#
# usage: sh tests/cli/cli_relay_keys.sh PATH/TO/tillsync

. "$(dirname "$0")/lib.sh"

err() { head -c 400 "$W/err"; }
expect_fail() {
    if [ "$rc" -eq 0 ]; then
        bad "$1: exit 0"
    elif [ "$(wc -l <"$W/err")" -ne 1 ]; then
        bad "$1: want one line on stderr, got: $(err)"
    elif ! grep -q "$2" "$W/err"; then
        bad "$1: stderr does not say '$2': $(err)"
    else
        ok
    fi
}

K=$W/shop.key
RK=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
must "$T" shop create "$K" --name "Corner Shop"
for db in a b; do
    must "$T" init "$W/$db.db"
    must "$T" enrol "$W/$db.db" --shop-key "$K" --name "till-$db"
done

run "$T" shop grant "$K" --relay "tcp://127.0.0.1:7400#$RK" --relay tcp://10.0.0.9:7400 \
    --relay-key "$RK" --quota-mb 500 --days 30
if [ "$rc" -eq 0 ] && grep -q "BEGIN TILLSYNC RELAY GRANT" "$W/out" &&
    grep -q "^# expires:" "$W/out"; then ok; else bad "shop grant: exit $rc: $(err)"; fi
cp "$W/out" "$W/grant"

run "$T" shop show "$W/grant"
if [ "$rc" -eq 0 ] && grep -q "relay grant" "$W/out"; then ok; else bad "shop show grant: $(err)"; fi

run "$T" enrol "$W/a.db" "$W/grant"
if [ "$rc" -eq 0 ]; then ok; else bad "enrol grant: $(err)"; fi
# The grant is a trust record: it travels in a bundle to the other till.
run "$T" bundle "$W/a.db" "$W/a.bundle"
[ "$rc" -eq 0 ] && ok || bad "bundle: $(err)"
run "$T" merge "$W/b.db" "$W/a.bundle"
[ "$rc" -eq 0 ] && ok || bad "merge: $(err)"
run "$T" sql "$W/b.db" "SELECT count(*) FROM tsync_grants"
[ "$(cat "$W/out")" = 1 ] && ok || bad "b holds $(cat "$W/out") grants ($(err))"

# status: no data key sealed to the till, the grant, and a state a person must act on.
run "$T" status "$W/b.db"
if grep -q "^data key: none sealed to this till" "$W/out" &&
    grep -q "^relay grant: tcp://127.0.0.1:7400 (+1 more), quota 500 MB, expires" "$W/out"; then
    ok
else
    bad "status text: $(cat "$W/out")"
fi
run "$T" status "$W/b.db" --json
if grep -q '"data_key_epoch": 0' "$W/out" && grep -q '"quota_mb": 500' "$W/out" &&
    grep -q '"data_key_missing"' "$W/out"; then ok; else bad "status json: $(cat "$W/out")"; fi
# A till not enrolled shows no relay keys.
must "$T" init "$W/c.db"
run "$T" status "$W/c.db"
if grep -q "data key" "$W/out"; then bad "not enrolled shows a data key line"; else ok; fi

# Refusals, each one line.
run "$T" shop grant "$K"
expect_fail "no relay" "relay"
run "$T" shop grant "$K" --relay tcp://127.0.0.1:7400
expect_fail "relay without key" "key"
run "$T" shop grant "$K" --relay "tcp://127.0.0.1:7400#abc"
expect_fail "short key" "64 hex"
run "$T" shop grant "$K" --relay "127.0.0.1:7400#$RK"
expect_fail "address without tcp://" "127.0.0.1:7400"
run "$T" shop grant "$K" --relay "tcp://127.0.0.1:7400#$RK" --quota-mb -1
expect_fail "negative quota" "quota"
run "$T" shop grant "$K" --relay "tcp://127.0.0.1:7400#$RK" --days 0
expect_fail "zero days" "days"
run "$T" shop grant "$K" --relay-key "$RK"
expect_fail "key without relay" "follows"

finish
