#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# tests/cli/cli_console_pages.sh — the console's pages as a running node serves them (curl, no
# browser; clicking through them is tests/browser/): every file of net/console/www/ is served byte
# for byte with its content type and the security headers (CSP default-src 'self'), index.html
# loads each of them and nothing else, has no inline script or handler and nothing from another
# origin, and names every element of the pages (docs/CONSOLE.md, "Pages"): the navigation, one
# section per page, and the ids and data-action buttons the pages' scripts fill; no script writes
# HTML (innerHTML and the like); the URLs the pages build answer (schema, export, import preview).
#
# usage: sh tests/cli/cli_console_pages.sh PATH/TO/tillsync
# Prints "FAIL: ..." for each failed check and "N passed, M failed"; exits 1 on any failure.

. "$(dirname "$0")/lib.sh"

WWW=$(cd "$(dirname "$0")/../../net/console/www" && pwd)
command -v curl >/dev/null 2>&1 || {
    bad "curl is not installed (scripts/install-deps.sh installs it)"
    finish
}

must "$T" init "$W/a.db"
must "$T" sql "$W/a.db" "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, stock INTEGER)"
must "$T" replicate "$W/a.db" products --max stock
mkdir "$W/bk"
"$T" run "$W/a.db" --listen 'tcp://127.0.0.1:*' --no-mdns --backup-dir "$W/bk" 2>"$W/a.log" &
PIDS="$!"
has_console() { "$T" status "$1" | grep -q '^console: http://127.0.0.1:[0-9]*/?token=[0-9a-f]\{64\}$'; }
wait_for 10 has_console "$W/a.db" || {
    bad "status shows no console URL: $("$T" status "$W/a.db") $(cat "$W/a.log")"
    finish
}
URL=$("$T" status "$W/a.db" | sed -n 's/^console: //p')
BASE=${URL%%\?*}
TOKEN=${URL#*token=}

# get PATH: the body in $W/body, the headers in $W/hdr, the status in $code.
get() { code=$(curl -s -D "$W/hdr" -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE$1"); }
header() { tr -d '\r' <"$W/hdr" | sed -n "s/^$1: //Ip" | head -n1; }

# ---------------------------------------------------------------- every file, as it is
n=0
for f in "$WWW"/*; do
    name=$(basename "$f")
    case "$name" in
    *.html) want="text/html; charset=utf-8" ;;
    *.js) want="text/javascript; charset=utf-8" ;;
    *.css) want="text/css; charset=utf-8" ;;
    *.svg) want="image/svg+xml" ;;
    *) want="application/octet-stream" ;;
    esac
    get "$name"
    [ "$code" = 200 ] && cmp -s "$f" "$W/body" && ok || bad "$name: $code, or not the file as it is in www/"
    [ "$(header Content-Type)" = "$want" ] && ok || bad "$name: Content-Type $(header Content-Type), not $want"
    header Content-Security-Policy | grep -q "^default-src 'self'; frame-ancestors 'none'" && ok ||
        bad "$name: CSP $(header Content-Security-Policy)"
    [ "$(header X-Content-Type-Options)" = nosniff ] && ok || bad "$name: no nosniff"
    case "$name" in
    index.html) ;;
    *) grep -q "\"/$name\"" "$WWW/index.html" && ok || bad "index.html does not load $name" ;;
    esac
    n=$((n + 1))
done
[ "$n" -ge 7 ] && ok || bad "only $n files in $WWW"
for js in app conflicts backups io schema; do
    [ -f "$WWW/$js.js" ] && ok || bad "no $js.js"
done
get ""
cmp -s "$WWW/index.html" "$W/body" && ok || bad "/ is not index.html"
header Content-Security-Policy | grep -q "default-src 'self'" && ok || bad "/: CSP $(header Content-Security-Policy)"
get "nosuch.js"
[ "$code" = 404 ] && [ "$(header Content-Type)" = application/json ] && ok || bad "an unknown file: $code $(header Content-Type)"
code=$(curl -s -o /dev/null -w '%{http_code}' "${BASE}app.js")
[ "$code" = 401 ] && ok || bad "a page file without the token: $code"

# ---------------------------------------------------------------- what the CSP allows
H="$WWW/index.html"
# Every script has a src (one of ours), none has a body; no handler attribute, no javascript: URL.
grep -o '<script[^>]*>' "$H" | grep -v 'src="/[a-z]*\.js"' | grep -q . && bad "a script without a src of ours" || ok
grep -q '<script[^>]*>[^<]' "$H" && bad "an inline script in index.html" || ok
grep -Eiq '[[:space:]]on[a-z]+=' "$H" && bad "an inline handler in index.html" || ok
grep -Eiq 'javascript:|<style|style=' "$H" && bad "javascript: or an inline style in index.html" || ok
grep -Eiq '(src|href)="(https?:)?//' "$H" && bad "index.html loads something from another origin" || ok
grep -Eq 'https?://' "$WWW"/*.js "$WWW"/*.css && bad "a script or the style names another origin" || ok
grep -Eq 'innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function' "$WWW"/*.js &&
    bad "a script writes HTML or evaluates text: $(grep -En 'innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function' "$WWW"/*.js)" || ok

# ---------------------------------------------------------------- the pages' elements
# names FILE PATTERN...: FILE has each (extended regex).
names() {
    f=$1
    shift
    for p in "$@"; do grep -Eq -- "$p" "$f" && ok || bad "$(basename "$f") lacks $p"; done
}
names "$H" '<nav>' \
    '<a href="#overview">' '<a href="#conflicts">' '<a href="#backups">' '<a href="#io">' '<a href="#schema">'
for p in overview conflicts backups io schema; do
    names "$H" "<section id=\"page-$p\" class=\"page\""
done
for id in indicator state reason tills queue held-reasons \
    conflicts conflicts-error no-conflicts dismiss-selected dismiss-all \
    backup-now backup-job backups restore-help \
    import-table import-format import-preview import-run import-rows import-errors import-result \
    export-table export-format export-link migrations; do
    names "$H" "id=\"$id\""
done
names "$H" '<input type="checkbox" id="conflicts-open-only" checked>' '<input id="import-file" type="file"' \
    '<select id="import-table">' '<select id="import-format">' '<select id="export-table">' \
    '<select id="export-format">' '<table id="import-rows">' '<ul id="import-errors"' '<a id="export-link"' \
    '<ul id="migrations">' 'tillsync restore'
for fmt in csv json ndjson; do
    [ "$(grep -c "<option value=\"$fmt\">" "$H")" = 2 ] && ok || bad "the format selects lack $fmt"
done
names "$WWW/conflicts.js" "'data-action': 'keep'" "'data-action': 'take-other'" "'data-action': 'value'" \
    "class: 'value-input'" "class: 'select'" "'data-id'" "\{ keep: true \}" "\{ take: 'other' \}" \
    "\{ value: input.value \}" "'/api/conflicts/dismiss', \{ ids \}" "\{ all: true \}" 'confirm\(' \
    "'/resolve'" "'\?open=1'"
names "$WWW/backups.js" "'data-file'" "'data-action': 'verify'" "'data-action': 'download'" \
    "'/api/backups/download\?file=' \+ encodeURIComponent" "'/api/backups/verify'"
names "$WWW/io.js" "'&dry_run=1'" "'/api/export\?table='" "'/api/schema'"
names "$WWW/schema.js" "class: 'schema-table', 'data-table': t.name" "'/api/schema'"

# ---------------------------------------------------------------- the URLs the pages build
get "api/schema"
[ "$code" = 200 ] && grep -q '"name":"products"' "$W/body" && grep -q '"policy":"max"' "$W/body" && ok ||
    bad "the schema page's source: $code $(cat "$W/body")"
get "api/export?table=products&format=csv"
[ "$code" = 200 ] && [ "$(header Content-Type)" = "text/csv; charset=utf-8" ] && ok ||
    bad "the export link: $code $(header Content-Type)"
printf 'id,name,price,stock\np1,tea,x,3\n' >"$W/bad.csv"
code=$(curl -s -o "$W/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/octet-stream' --data-binary @"$W/bad.csv" \
    "${BASE}api/import?table=products&format=csv&dry_run=1")
[ "$code" = 200 ] && grep -q '"line":2,"column":"price"' "$W/body" && ok ||
    bad "the import preview as the page sends it: $code $(cat "$W/body")"

kill "$PIDS"
wait "$PIDS" && ok || bad "the node did not stop cleanly"
PIDS=""
finish
