#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_datakey.sh — the admin's side of the shop data key (docs/RELAY_KEYS.md, "The
# admin's key file"): shop create makes epoch 1; shop sign prints the certificate and the data key
# sealed to every certified device, which enrol / trust add install together; shop revoke prints a
# new epoch the revoked till does not get; shop data-key issues the key for an existing shop from
# a version 1 key file (tests/cli/data/shop_v1.key, made by `shop create` of the build before key
# file version 2), which it rewrites as version 2 saying so once; errors are one line.
#
# usage: sh tests/cli/cli_datakey.sh PATH/TO/tillsync

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
# epochs DB HELD LATEST: status --json relay_keys of DB says the till holds HELD, knows LATEST.
epochs() {
    "$T" status "$1" --json >"$W/st" 2>&1
    if grep -q "\"data_key_epoch\": $2," "$W/st" && grep -q "\"data_key_latest\": $3," "$W/st"; then
        ok
    else
        bad "$1: want data key epoch $2 of $3: $(grep -A2 relay_keys "$W/st" | tr -d '\n')"
    fi
}
blocks() { grep -c "^-----BEGIN TILLSYNC $2-----" "$1"; }

K=$W/shop.key
run "$T" shop create "$K" --name "Corner Shop"
[ "$rc" -eq 0 ] && grep -q "^data key:  epoch 1" "$W/out" && ok || bad "create: $(cat "$W/out") $(err)"
run "$T" shop show "$K"
if grep -q "(version 2)" "$W/out" && grep -q "^data key:   epoch 1" "$W/out" &&
    grep -q "^devices:    0 certified, 0 revoked" "$W/out"; then ok; else bad "show: $(cat "$W/out")"; fi

# Two tills, each enrolled with what shop sign printed (certificate + data key).
for db in a b; do
    must "$T" init "$W/$db.db"
    "$T" enrol-request "$W/$db.db" --name "till-$db" >"$W/$db.req" || bad "request $db"
    run "$T" shop sign "$K" "$W/$db.req"
    if [ "$rc" -eq 0 ] && [ "$(blocks "$W/out" CERTIFICATE)" = 1 ] &&
        [ "$(blocks "$W/out" 'DATA KEY')" = 1 ] && [ ! -s "$W/err" ]; then
        ok
    else
        bad "sign $db: exit $rc: $(err)"
    fi
    cp "$W/out" "$W/$db.cert"
    run "$T" enrol "$W/$db.db" "$W/$db.cert"
    [ "$rc" -eq 0 ] && ok || bad "enrol $db: $(err)"
    epochs "$W/$db.db" 1 1
done
# a's output sealed epoch 1 to a only; b's to a and b. trust add takes b's on a (any records).
run "$T" trust add "$W/a.db" "$W/b.cert"
[ "$rc" -eq 0 ] && ok || bad "trust add: $(err)"
n=$("$T" sql "$W/a.db" "SELECT count(*) FROM tsync_data_keys WHERE epoch = 1")
[ "$n" = 2 ] && ok || bad "a holds $n records of epoch 1"
run "$T" shop show "$K"
grep -q "^devices:    2 certified, 0 revoked" "$W/out" && ok || bad "show 2: $(cat "$W/out")"

# Revoke a (DEVICEKEY given as its request file): a new epoch sealed to b only.
run "$T" shop revoke "$K" "$W/a.req" --cutoff "$(site "$W/a.db"):0"
if [ "$rc" -eq 0 ] && [ "$(blocks "$W/out" REVOCATION)" = 1 ] &&
    [ "$(blocks "$W/out" 'DATA KEY')" = 1 ] && grep -q "^# epoch:  *2" "$W/out"; then
    ok
else
    bad "revoke: exit $rc: $(err) $(cat "$W/out")"
fi
cp "$W/out" "$W/a.rev"
run "$T" revoke "$W/b.db" "$W/a.rev"
if [ "$rc" -eq 0 ] && grep -q "1 data key record installed" "$W/out"; then ok; else
    bad "revoke on b: $(err)"
fi
epochs "$W/b.db" 2 2
run "$T" trust add "$W/a.db" "$W/a.rev"
[ "$rc" -eq 0 ] && ok || bad "trust add revocation on a: $(err)"
epochs "$W/a.db" 1 2
run "$T" status "$W/b.db"
grep -q "^data key: epoch 2" "$W/out" && ok || bad "status b: $(grep 'data key' "$W/out")"
run "$T" shop show "$K"
if grep -q "^data key:   epoch 2" "$W/out" && grep -q "^devices:    1 certified, 1 revoked" "$W/out"
then ok; else bad "show after revoke: $(cat "$W/out")"; fi
# A revoked device is not certified again, and the key file is left as it was.
cp "$K" "$W/before.key"
run "$T" shop sign "$K" "$W/a.req"
expect_fail "sign revoked" "revoked"
cmp -s "$K" "$W/before.key" && ok || bad "a refused sign changed the key file"
# shop data-key on a version 2 file: the current epoch, sealed to b.
run "$T" shop data-key "$K"
if [ "$rc" -eq 0 ] && grep -q "^# epoch:  *2" "$W/out" && [ ! -s "$W/err" ]; then ok; else
    bad "data-key v2: $(err)"
fi

# ---------------------------------------------------------------- an existing shop (version 1)
V1=$W/v1.key
cp "$(dirname "$0")/data/shop_v1.key" "$V1" && chmod 600 "$V1"
run "$T" shop show "$V1"
if grep -q "(version 1)" "$W/out" && grep -q "^data key:   none yet" "$W/out"; then ok; else
    bad "show v1: $(cat "$W/out") $(err)"
fi
# With no device known, shop data-key has nobody to seal to: one line, file untouched.
run "$T" shop data-key "$V1"
expect_fail "data-key without devices" "no device"
cmp -s "$V1" "$(dirname "$0")/data/shop_v1.key" && ok || bad "refused data-key changed the file"
for db in c d; do
    must "$T" init "$W/$db.db"
    must "$T" enrol "$W/$db.db" --shop-key "$V1" --name "till-$db"
done
cmp -s "$V1" "$(dirname "$0")/data/shop_v1.key" && ok || bad "enrol --shop-key rewrote v1"
run "$T" shop data-key "$V1" --from "$W/c.db" --device "$(pubkey "$W/d.db")"
if [ "$rc" -eq 0 ] && [ "$(blocks "$W/out" 'DATA KEY')" = 1 ] && grep -q "^# epoch:  *1" "$W/out" &&
    [ "$(wc -l <"$W/err")" -eq 1 ] && grep -q "now a version 2 key file" "$W/err"; then
    ok
else
    bad "data-key v1: exit $rc: $(err)"
fi
cp "$W/out" "$W/v1.dkey"
for db in c d; do
    run "$T" trust add "$W/$db.db" "$W/v1.dkey"
    [ "$rc" -eq 0 ] && ok || bad "trust add $db: $(err)"
    epochs "$W/$db.db" 1 1
done
run "$T" shop show "$V1"
if grep -q "(version 2)" "$W/out" && grep -q "^devices:    2 certified, 0 revoked" "$W/out"; then
    ok
else
    bad "show upgraded: $(cat "$W/out")"
fi
# Said once: the file is version 2 now.
run "$T" shop data-key "$V1"
[ "$rc" -eq 0 ] && [ ! -s "$W/err" ] && ok || bad "second data-key: exit $rc: $(err)"

# ---------------------------------------------------------------- refusals, one line each
run "$T" shop data-key "$V1" --from "$W/a.db"
expect_fail "--from another shop" "not the shop of this key file"
run "$T" shop data-key "$V1" --device 1234
expect_fail "bad --device" "1234"
set --
i=0
while [ $i -lt 33 ]; do
    set -- "$@" --device "$(printf '%064x' $((i + 1)))"
    i=$((i + 1))
done
cp "$K" "$W/before.key"
run "$T" shop data-key "$K" "$@"
expect_fail "33 devices" "more than the 32"
cmp -s "$K" "$W/before.key" && ok || bad "refused data-key changed the key file"
run "$T" shop data-key
expect_fail "no key file" "KEYFILE"

finish
