#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_trust.sh — the shop trust commands of tillsync, end to end, in the exact forms of
# docs/TRUST.md: shop create, enrol-request, shop sign (file and stdin, --days, --name), enrol
# (CERT, several files, --shop-key one step, renewal), shop revoke (--cutoff, --cutoffs-from) and
# revoke, shop rotate, shop show, trust; and the refusals: overwriting a key file, a key file
# others can read, tampered files, a certificate of another device or shop, a database holding
# batches from outside the shop, a revocation on a database not enrolled.
#
# usage: sh tests/cli/cli_trust.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.
# A command tillsync does not know yet is one FAIL line each, not a crash.

. "$(dirname "$0")/lib.sh"

check() {
    d=$1
    shift
    if "$@"; then ok; else bad "$d"; fi
}
out() { cat "$W/out"; }
err() { head -c 400 "$W/err"; }
expect_ok() {
    if [ "$rc" -eq 0 ] && [ ! -s "$W/err" ]; then ok; else bad "$1: exit $rc, stderr: $(err)"; fi
}
# expect_fail DESCRIPTION STATUS [PATTERN]: the last run exited STATUS with a one-line message on
# stderr (matching PATTERN, a grep regex, when given).
expect_fail() {
    if [ "$rc" -ne "$2" ]; then
        bad "$1: exit $rc, want $2 (stderr: $(err))"
    elif [ "$(wc -l <"$W/err")" -ne 1 ]; then
        bad "$1: want one line on stderr, got: $(err)"
    elif [ -n "$3" ] && ! grep -q "$3" "$W/err"; then
        bad "$1: stderr does not say '$3': $(err)"
    else
        ok
    fi
}
mode() {
    # shellcheck disable=SC2012
    ls -l "$1" | cut -c1-10
}
sum() { cksum <"$1"; }
# q DB SQL: the output of tillsync sql (empty on error).
q() { "$T" sql "$1" "$2" 2>/dev/null; }
# flip FILE: changes one base64 character in the middle of the armoured block.
flip() {
    awk 'BEGIN{d=0} /^-----BEGIN/{print; getline; c=substr($0,20,1); r=(c=="A")?"B":"A";
        print substr($0,1,19) r substr($0,21); next} {print}' "$1"
}

# ---------------------------------------------------------------- are the commands there?
missing=0
for cmd in shop enrol-request enrol revoke trust; do
    "$T" "$cmd" >"$W/out" 2>"$W/err"
    if grep -q "unknown command" "$W/err"; then
        bad "tillsync does not know the command '$cmd' (dispatch it in tools/tillsync.c)"
        missing=1
    else
        ok
    fi
done
if [ "$missing" -ne 0 ]; then
    echo "$pass passed, $fail failed"
    exit 1
fi
run "$T" --help
for form in "shop create KEYFILE --name NAME" "shop sign KEYFILE REQ" "shop revoke KEYFILE DEVICEKEY" \
    "enrol-request DB" "enrol DB CERT" "enrol DB --shop-key KEYFILE" "revoke DB REVOCATION"; do
    grep -q "^  $form" "$W/out" && ok || bad "--help does not list '$form'"
done

# ---------------------------------------------------------------- shop create
K=$W/shop.key
run "$T" shop create "$K" --name "Corner Shop"
expect_ok "shop create"
check "shop create names the shop" grep -q "^shop 'Corner Shop' created$" "$W/out"
SHOP_ID=$(sed -n 's/^shop id: *//p' "$W/out")
ADMIN=$(sed -n 's/^admin key: *//p' "$W/out")
echo "$SHOP_ID" | grep -q '^[0-9a-f]\{32\}$' && ok || bad "shop create: no shop id: $(out)"
echo "$ADMIN" | grep -q '^[0-9a-f]\{64\}$' && ok || bad "shop create: no admin key: $(out)"
[ "$(mode "$K")" = "-rw-------" ] && ok || bad "key file mode is $(mode "$K"), not -rw-------"
before=$(sum "$K")
run "$T" shop create "$K" --name "Another Shop"
expect_fail "shop create over an existing file" 1 "exists already"
[ "$(sum "$K")" = "$before" ] && ok || bad "shop create changed an existing key file"
run "$T" shop create "$W/noname.key"
expect_fail "shop create without --name" 2
[ ! -e "$W/noname.key" ] && ok || bad "shop create without --name wrote a file"
run "$T" shop create "$W/empty.key" --name ""
expect_fail "shop create with an empty name" 1 "name"
run "$T" shop show "$K"
expect_ok "shop show KEYFILE"
check "shop show names the shop and its admin key" grep -q "admin key:  $ADMIN" "$W/out"
grep -q "$(od -An -tx1 -j 20 -N 8 "$K" | tr -d ' \n')" "$W/out" && bad "shop show prints secret bytes" || ok

# ---------------------------------------------------------------- request, sign, enrol
for db in a b c d e; do "$T" init "$W/$db.db" >/dev/null || bad "init $db"; done
run "$T" enrol-request "$W/a.db"
expect_ok "enrol-request DB"
cp "$W/out" "$W/a-host.req"
check "a request is an armoured block" grep -q "^-----BEGIN TILLSYNC ENROLMENT REQUEST-----$" "$W/out"
check "a request names the device by host name" grep -q "^# device: *$(uname -n | cut -c1-64)$" "$W/out"
check "a request shows the device key" grep -q "^# device key: $(pubkey "$W/a.db")$" "$W/out"
"$T" enrol-request "$W/a.db" --name "till-a" >"$W/a.req" 2>"$W/err"
check "enrol-request --name" grep -q "^# device: *till-a$" "$W/a.req"
run "$T" shop sign "$K" "$W/a.req"
expect_ok "shop sign KEYFILE REQ"
cp "$W/out" "$W/a.cert"
check "a certificate is an armoured block" grep -q "^-----BEGIN TILLSYNC CERTIFICATE-----$" "$W/a.cert"
check "a certificate names shop and device" grep -q "^# shop: *Corner Shop (id $SHOP_ID)$" "$W/a.cert"
check "a certificate keeps the requested name" grep -q "^# device: *till-a$" "$W/a.cert"
y1=$(sed -n 's/^# valid: *\([0-9]\{4\}\).* to \([0-9]\{4\}\).*/\1 \2/p' "$W/a.cert")
[ -n "$y1" ] && [ $((${y1#* } - ${y1% *})) -eq 1 ] && ok || bad "default validity is not a year: $y1"
run "$T" shop sign "$K" "$W/a.req" --days 30 --name "Till A"
expect_ok "shop sign --days --name"
check "shop sign --name overrides the device name" grep -q "^# device: *Till A$" "$W/out"
run "$T" shop sign "$K" "$W/a.req" --days 0
expect_fail "shop sign --days 0" 2
flip "$W/a.req" >"$W/a-bad.req"
run "$T" shop sign "$K" "$W/a-bad.req"
expect_fail "shop sign of a tampered request" 1
run "$T" shop sign "$K" "$W/a.cert"
expect_fail "shop sign of a certificate" 1 "not a"

flip "$W/a.cert" >"$W/a-bad.cert"
run "$T" enrol "$W/a.db" "$W/a-bad.cert"
expect_fail "enrol with a tampered certificate" 1
[ -z "$(q "$W/a.db" "SELECT count(*) FROM tsync_shop")" ] && ok || bad "tampered enrol changed a.db"
run "$T" enrol "$W/c.db" "$W/a.cert"
expect_fail "enrol with another device's certificate" 1 "this device's key"
run "$T" enrol "$W/a.db" "$W/a.req"
expect_fail "enrol with a request" 1 "request"
run "$T" enrol "$W/a.db" "$W/a.cert"
expect_ok "enrol DB CERT"
check "enrol says which shop and device" \
    grep -q "enrolled in shop 'Corner Shop' (id $SHOP_ID) as device 'till-a'" "$W/out"
[ "$(q "$W/a.db" "SELECT count(*) FROM tsync_shop")" = 1 ] && ok || bad "tsync_shop has no row"
[ "$(q "$W/a.db" "SELECT hex(admin_pk) FROM tsync_shop")" = "$(echo "$ADMIN" | tr a-f A-F)" ] &&
    ok || bad "the database does not hold the shop's admin key"
run "$T" enrol "$W/a.db" "$W/a.cert"
expect_ok "enrol again with the same certificate"
check "enrolling twice says nothing is new" grep -q "already" "$W/out"

# stdin, and the one-step form
"$T" enrol-request "$W/b.db" --name till-b | "$T" shop sign "$K" - >"$W/b.cert" 2>"$W/err"
check "enrol-request | shop sign KEYFILE -" grep -q "^# device: *till-b$" "$W/b.cert"
run "$T" enrol "$W/e.db" --shop-key "$K" --name till-e --days 10
expect_ok "enrol DB --shop-key KEYFILE"
check "one-step enrol names the device" grep -q "as device 'till-e'" "$W/out"
[ "$(q "$W/e.db" "SELECT count(*) FROM tsync_certs")" = 1 ] && ok || bad "one-step: no certificate"
run "$T" enrol "$W/e.db" --shop-key "$K" --name till-e --days 400
expect_ok "renewal through --shop-key"
check "renewal says installed" grep -q "certificate of device 'till-e' in shop 'Corner Shop' installed" "$W/out"
[ "$(q "$W/e.db" "SELECT count(*) FROM tsync_certs")" = 2 ] && ok || bad "renewal: not 2 certificates"
run "$T" enrol "$W/e.db" "$W/b.cert" --shop-key "$K"
expect_fail "enrol with CERT and --shop-key" 2

# a key file others can read
chmod 644 "$K"
run "$T" shop sign "$K" "$W/a.req"
expect_fail "shop sign with a key file others can read" 1 "chmod 600"
chmod 600 "$K"

# ---------------------------------------------------------------- another shop
run "$T" shop create "$W/other.key" --name "Other Shop"
expect_ok "shop create (another shop)"
"$T" enrol-request "$W/a.db" | "$T" shop sign "$W/other.key" - >"$W/a-other.cert"
run "$T" enrol "$W/a.db" "$W/a-other.cert"
expect_fail "enrol with a certificate of another shop" 1 "enrolled in shop 'Corner Shop'"

# ---------------------------------------------------------------- batches from outside the shop
P="CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0)"
for db in c d; do
    "$T" sql "$W/$db.db" "$P" >/dev/null && "$T" replicate "$W/$db.db" products --counter stock \
        >/dev/null || bad "replicate on $db"
done
"$T" sql "$W/c.db" "INSERT INTO products VALUES('p1', 'Tea', 10)" >/dev/null
"$T" bundle "$W/c.db" "$W/c.bdl" >/dev/null && "$T" merge "$W/d.db" "$W/c.bdl" >/dev/null ||
    bad "bundle c -> d"
run "$T" enrol "$W/d.db" --shop-key "$K"
expect_fail "enrol a database holding another device's batches" 1 "would refuse"
[ -z "$(q "$W/d.db" "SELECT count(*) FROM tsync_shop")" ] && ok || bad "refused enrol changed d.db"
"$T" enrol-request "$W/d.db" --name till-d | "$T" shop sign "$K" - >"$W/d.cert"
"$T" enrol-request "$W/c.db" --name till-c | "$T" shop sign "$K" - >"$W/c.cert"
run "$T" enrol "$W/d.db" "$W/d.cert" "$W/c.cert"
expect_ok "enrol DB CERT OTHERCERT (the other device's certificate given too)"
cat "$W/c.cert" "$W/b.cert" >"$W/cb.certs"
run "$T" enrol "$W/a.db" "$W/cb.certs"
expect_ok "enrol an enrolled database with a file of two other certificates"
check "two records installed" grep -q "^2 other records of shop 'Corner Shop' installed$" "$W/out"

# ---------------------------------------------------------------- revocation
BKEY=$(pubkey "$W/b.db")
BSITE=$(site "$W/b.db")
run "$T" shop revoke "$K" "$BKEY" --cutoff "$BSITE:3"
expect_ok "shop revoke KEYFILE DEVICEKEY --cutoff SITE:SEQ"
cp "$W/out" "$W/b.rev"
check "a revocation is an armoured block" grep -q "^-----BEGIN TILLSYNC REVOCATION-----$" "$W/b.rev"
check "a revocation lists its cutoff" grep -q "^# cutoffs: *$BSITE:3$" "$W/b.rev"
run "$T" revoke "$W/a.db" "$W/b.rev"
expect_ok "revoke DB REVOCATION"
check "revoke says what it installed" grep -q "^revocation of device key $BKEY installed" "$W/out"
[ "$(q "$W/a.db" "SELECT count(*) FROM tsync_revocations")" = 1 ] && ok || bad "no revocation row"
run "$T" revoke "$W/a.db" "$W/b.rev"
expect_ok "revoke twice (a no-op)"
[ "$(q "$W/a.db" "SELECT count(*) FROM tsync_revocations")" = 1 ] && ok || bad "revocation stored twice"
run "$T" revoke "$W/c.db" "$W/b.rev"
expect_fail "revoke on a database not enrolled" 1 "not enrolled"
run "$T" revoke "$W/a.db" "$W/b.cert"
expect_fail "revoke with a certificate file" 1
flip "$W/b.rev" >"$W/b-bad.rev"
run "$T" revoke "$W/e.db" "$W/b-bad.rev"
expect_fail "revoke with a tampered revocation" 1
"$T" enrol-request "$W/b.db" | "$T" shop sign "$W/other.key" - >/dev/null
"$T" shop revoke "$W/other.key" "$BKEY" >"$W/b-other.rev" 2>/dev/null
run "$T" revoke "$W/a.db" "$W/b-other.rev"
expect_fail "revoke with another shop's revocation" 1 "shop"
run "$T" shop revoke "$K" "$W/b.cert" --cutoff "$BSITE:3"
expect_ok "shop revoke with a certificate file as DEVICEKEY"
grep -q "^# device key: $BKEY$" "$W/out" && ok || bad "DEVICEKEY from a certificate file"
run "$T" shop revoke "$K" "nothex"
expect_fail "shop revoke with a bad DEVICEKEY" 1 "DEVICEKEY"
run "$T" shop revoke "$K" "$BKEY" --cutoff "xyz:3"
expect_fail "shop revoke with a bad --cutoff" 2
# without a cutoff: a note on stderr, still a revocation on stdout
"$T" shop revoke "$K" "$BKEY" >"$W/out" 2>"$W/err"
grep -q "no cutoff" "$W/err" && grep -q "BEGIN TILLSYNC REVOCATION" "$W/out" && ok ||
    bad "shop revoke without --cutoff: $(err)"
# cutoffs from a till's database: d holds c's batches
CKEY=$(pubkey "$W/c.db")
CSITE=$(site "$W/c.db")
run "$T" shop revoke "$K" "$CKEY" --cutoffs-from "$W/d.db"
expect_ok "shop revoke --cutoffs-from DB"
check "--cutoffs-from takes what that database holds" grep -q "^# cutoffs: *$CSITE:1$" "$W/out"

# ---------------------------------------------------------------- show, trust
run "$T" shop show "$W/a.cert"
expect_ok "shop show CERT"
check "shop show verifies the signature" grep -q "^signature: *verifies$" "$W/out"
run "$T" shop show "$W/a-bad.cert"
expect_fail "shop show of a tampered certificate" 1
run "$T" trust "$W/a.db"
expect_ok "trust DB"
check "trust shows the shop" grep -q "^shop: *Corner Shop (id $SHOP_ID)$" "$W/out"
check "trust marks the revoked device" grep -q "^  till-b .*REVOKED" "$W/out"
check "trust marks this device" grep -q "^  till-a .*valid  (this device)$" "$W/out"
run "$T" trust "$W/a.db" --json
expect_ok "trust DB --json"
check "trust --json says enrolled" grep -q '"enrolled": true' "$W/out"
run "$T" trust "$W/c.db"
expect_ok "trust of a database not enrolled"
check "trust says not enrolled" grep -q "^not enrolled" "$W/out"

# ---------------------------------------------------------------- rotation
run "$T" shop rotate "$K" "$W/new.key"
expect_ok "shop rotate KEYFILE NEWKEYFILE"
cp "$W/out" "$W/rot"
check "a rotation is an armoured block" grep -q "^-----BEGIN TILLSYNC ADMIN KEY ROTATION-----$" "$W/rot"
[ "$(mode "$W/new.key")" = "-rw-------" ] && ok || bad "new key file mode $(mode "$W/new.key")"
run "$T" shop rotate "$K" "$W/new.key"
expect_fail "shop rotate over an existing file" 1 "exists already"
"$T" init "$W/f.db" >/dev/null
"$T" enrol-request "$W/f.db" --name till-f | "$T" shop sign "$W/new.key" - >"$W/f.cert"
run "$T" enrol "$W/a.db" "$W/f.cert"
expect_fail "a certificate signed by the new key before the rotation is known" 1 "admin key"
run "$T" enrol "$W/a.db" "$W/rot" "$W/f.cert"
expect_ok "enrol DB ROTATION CERT"
run "$T" enrol "$W/f.db" "$W/f.cert"
expect_ok "enrol with a certificate of the new key"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
