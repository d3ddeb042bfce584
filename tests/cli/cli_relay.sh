#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_relay.sh — tillsync relay init|admit|status from the command line: init prints
# the public key and refuses a second time; admit refuses a bad key, a missing or zero quota, a
# bad date and a folder without a relay, and admits a real admin key (from `shop create`);
# status shows the shop in text and JSON; an unknown subcommand is a usage error. Serving is
# tested by tests/net/test_relay.c.
#
# usage: sh tests/cli/cli_relay.sh PATH/TO/tillsync
. "$(dirname "$0")/lib.sh"

# expect STATUS DESCRIPTION COMMAND...: the command exits with STATUS.
expect() {
    want=$1
    d=$2
    shift 2
    "$@" >"$W/out" 2>"$W/err"
    got=$?
    if [ "$got" -eq "$want" ]; then ok; else bad "$d: exit $got, expected $want: $(cat "$W/err")"; fi
}

out=$("$T" relay init "$W/r") || bad "relay init"
echo "$out" | grep -q "public key: [0-9a-f]\{64\}" && ok || bad "relay init: no public key: $out"
expect 1 "relay init twice" "$T" relay init "$W/r"
grep -q "a relay is here already" "$W/err" && ok || bad "init twice: $(cat "$W/err")"

must "$T" shop create "$W/shop.key" --name "Relay Shop"
adm=$("$T" shop show "$W/shop.key" | sed -n 's/^admin key: *\([0-9a-f]\{64\}\)$/\1/p')
[ -n "$adm" ] && ok || bad "no admin key in shop show"

expect 2 "a short key" "$T" relay admit "$W/r" 1234 --quota-mb 5
expect 2 "no quota" "$T" relay admit "$W/r" "$adm"
expect 2 "quota 0" "$T" relay admit "$W/r" "$adm" --quota-mb 0
expect 2 "a bad date" "$T" relay admit "$W/r" "$adm" --quota-mb 5 --expires tomorrow
expect 1 "admit without a relay" "$T" relay admit "$W/nothing" "$adm" --quota-mb 5
grep -q "no relay here" "$W/err" && ok || bad "admit without a relay: $(cat "$W/err")"
expect 0 "admit" "$T" relay admit "$W/r" "$adm" --quota-mb 5 --expires 2099-01-31

expect 0 "status" "$T" relay status "$W/r"
grep -q "admin key $adm" "$W/out" && ok || bad "status text: $(cat "$W/out")"
grep -q "of 5242880 bytes" "$W/out" && ok || bad "status quota: $(cat "$W/out")"
expect 0 "status --json" "$T" relay status "$W/r" --json
/usr/bin/python3 - "$W/out" "$adm" <<'PY' && ok || bad "status --json: $(cat "$W/out")"
import json, sys
j = json.load(open(sys.argv[1]))
s = j["shops"][0]
assert s["admin_key"] == sys.argv[2], s
assert s["quota_bytes"] == 5 << 20 and s["expires"] == 4073500800000, s
assert s["shop_id"] is None and s["envelopes"] == 0 and j["refused"] == {}, j
PY
expect 1 "status without a relay" "$T" relay status "$W/nothing"
grep -q "no relay here" "$W/err" && ok || bad "status without a relay: $(cat "$W/err")"
expect 2 "unknown subcommand" "$T" relay frobnicate
finish
