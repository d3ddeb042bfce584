#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_vault.sh — the cloud backup commands (docs/BACKUP.md, "Cloud backup"): backup,
# backup list, backup delete and restore with --remote, against a real `tillsync relay run`. Usage
# errors exit 2 with one line; a till not enrolled, a shop without a grant, a till without the
# shop's data key, a shop with no backup yet and a bad backup id each exit 1 with one line naming
# the problem; list says there is nothing yet (text and --json). The uploads, restores and
# schedules themselves are in tests/net/test_vault.c (they need a data key the CLI cannot issue
# yet).
#
# usage: sh tests/cli/cli_vault.sh PATH/TO/tillsync

. "$(dirname "$0")/lib.sh"

err() { head -c 400 "$W/err"; }
# expect STATUS WHAT NEEDLE COMMAND...: exits STATUS with one line on stderr saying NEEDLE.
expect() {
    want=$1 what=$2 needle=$3
    shift 3
    run "$@"
    if [ "$rc" -ne "$want" ]; then
        bad "$what: exit $rc, want $want: $(err)"
    elif [ "$(wc -l <"$W/err")" -ne 1 ]; then
        bad "$what: want one line on stderr, got: $(err)"
    elif ! grep -q -- "$needle" "$W/err"; then
        bad "$what: stderr does not say '$needle': $(err)"
    else
        ok
    fi
}

K=$W/shop.key
must "$T" shop create "$K" --name "Vault Shop"
must "$T" init "$W/a.db"
must "$T" enrol "$W/a.db" --shop-key "$K" --name till-a
must "$T" init "$W/lone.db"

# Usage errors.
expect 2 "list without --remote" "--remote is needed" "$T" backup list "$W/a.db"
expect 2 "list without DB" "backup list needs DB" "$T" backup list --remote
expect 2 "restore without an id" "needs DB and a backup ID or latest" "$T" restore "$W/a.db" --remote
expect 2 "delete without an id" "needs DB and a backup ID" "$T" backup delete "$W/a.db" --remote
expect 2 "a bad --max-chunks" "max-chunks" "$T" backup "$W/a.db" --remote --max-chunks 0

# Not enrolled; enrolled but no grant.
expect 1 "not enrolled" "not enrolled in a shop" "$T" backup "$W/lone.db" --remote
expect 1 "no grant" "no relay grant" "$T" backup list "$W/a.db" --remote

# A relay serving the shop, and its grant on the till.
out=$("$T" relay init "$W/r") || bad "relay init"
rk=$(echo "$out" | sed -n 's/.*public key: \([0-9a-f]\{64\}\).*/\1/p')
adm=$("$T" shop show "$K" | sed -n 's/^admin key: *\([0-9a-f]\{64\}\)$/\1/p')
must "$T" relay admit "$W/r" "$adm" --quota-mb 5
"$T" relay run "$W/r" --listen "tcp://127.0.0.1:*" 2>"$W/relay.log" &
PIDS="$PIDS $!"
wait_for 10 grep -q "listening on" "$W/relay.log" || bad "the relay did not start: $(cat "$W/relay.log")"
ep=$(sed -n 's/.*listening on \(tcp:[^ ]*\).*/\1/p' "$W/relay.log" | head -n1)
"$T" shop grant "$K" --relay "$ep#$rk" --quota-mb 5 >"$W/grant" 2>"$W/err" || bad "grant: $(err)"
must "$T" enrol "$W/a.db" "$W/grant"

run "$T" backup list "$W/a.db" --remote
if [ "$rc" -eq 0 ] && grep -q "^no cloud backups of this shop yet" "$W/out"; then ok; else
    bad "list, none: exit $rc: $(cat "$W/out") $(err)"
fi
run "$T" backup list "$W/a.db" --remote --json
if [ "$rc" -eq 0 ] && tr -d ' \n' <"$W/out" | grep -q '^{"backups":\[\]}$'; then ok; else
    bad "list --json, none: exit $rc: $(cat "$W/out") $(err)"
fi

# No data key sealed to this till: nothing can be encrypted for the shop.
expect 1 "no data key" "no data key of the shop is sealed to this till" \
    "$T" backup "$W/a.db" --remote
[ ! -e "$W/a.db.vault-pending" ] && ok || bad "a pending upload was left without a data key"
expect 1 "restore latest, none" "no cloud backup yet" "$T" restore "$W/a.db" --remote latest
expect 1 "restore a bad id" "give an id" "$T" restore "$W/a.db" --remote not-an-id
expect 1 "restore an unknown id" "no cloud backup 0123456789abcdef" \
    "$T" restore "$W/a.db" --remote 0123456789abcdef
expect 1 "delete an unknown id" "no cloud backup" \
    "$T" backup delete "$W/a.db" --remote 0123456789abcdef

# A relay that is gone: a timeout naming it.
kill $PIDS 2>/dev/null
wait 2>/dev/null
PIDS=""
expect 1 "relay gone" "$ep" "$T" backup list "$W/a.db" --remote --timeout-ms 500

finish
