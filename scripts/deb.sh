#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# scripts/deb.sh — the Debian packages (debian/, docs/PACKAGING.md) built and used as a shop's IT
# would: builds libtillsync0, libtillsync-dev and tillsync out of tree (a copy of the checkout's
# files in a temporary folder, so no build artefact lands in the clone), runs lintian (errors
# fail), installs the three .debs into this machine with apt, checks the installed tool, library,
# -dev files and service files, then purges them again and checks the machine's package list and
# users are as they were.
#   scripts/deb.sh            (JOBS=N: parallel build jobs, default 2; TSYNC_DEB_KEEP=DIR keeps
#                              the .debs, the build log and lintian's report there)
# Needs root (or sudo -n) for apt-get. Refuses to run when a tillsync package is installed
# already (it would purge it). Prints "FAIL: ..." and exits 1 on the first problem.
set -eu
cd "$(dirname "$0")/.."
src=$PWD
JOBS=${JOBS:-2}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
# The binary packages debian/control declares (a package added there is built, installed and
# purged here too).
PKGS=$(sed -n 's/^Package: *//p' debian/control | tr '\n' ' ')
t0=$(date +%s)
fail() {
    echo "FAIL: $*"
    exit 1
}
installed() { # PACKAGE: installed (or half-installed) at all?
    dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qv '^not-installed$'
}
apt_get() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@"
}

version=$(sed -n 's/^project(tillsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || fail "no project(tillsync VERSION ...) in CMakeLists.txt"
deb_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
[ "${deb_version%%[-+~]*}" = "$version" ] ||
    fail "debian/changelog is at $deb_version, CMakeLists.txt at $version: add a debian/changelog entry"
for p in $PKGS; do
    if installed "$p"; then fail "$p is installed already: this script would purge it"; fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/tsync-deb.XXXXXX")
chmod 755 "$work" # apt reads the .debs as the user _apt
had_user=0
getent passwd tillsync >/dev/null && had_user=1
had_relay_user=0
getent passwd tillsync-relay >/dev/null && had_relay_user=1
brought="" # what apt installs: the packages, and any dependency the machine lacked
cleanup() {
    rc=$?
    left=""
    for p in $brought; do
        if installed "$p"; then left="$left $p"; fi
    done
    if [ -n "$left" ]; then
        apt_get purge $left >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; echo "FAIL: apt-get purge$left"; rc=1; }
    fi
    # Debian leaves system users in place on purge; this script made it, so it removes it.
    if [ "$had_user" = 0 ] && getent passwd tillsync >/dev/null; then
        $SUDO userdel tillsync || rc=1
    fi
    if [ "$had_user" = 0 ] && getent group tillsync >/dev/null; then
        $SUDO groupdel tillsync || rc=1
    fi
    if [ "$had_relay_user" = 0 ] && getent passwd tillsync-relay >/dev/null; then
        $SUDO userdel tillsync-relay || rc=1
    fi
    if [ "$had_relay_user" = 0 ] && getent group tillsync-relay >/dev/null; then
        $SUDO groupdel tillsync-relay || rc=1
    fi
    if [ -n "${TSYNC_DEB_KEEP:-}" ]; then
        mkdir -p "$TSYNC_DEB_KEEP"
        cp "$work"/*.deb "$work"/build.log "$work"/lintian.log "$TSYNC_DEB_KEEP"/ 2>/dev/null || true
    fi
    $SUDO rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "-- dpkg-buildpackage (source and binaries, nocheck, -j$JOBS) of a copy of $src"
mkdir "$work/tillsync"
git ls-files -z --cached --others --exclude-standard |
    tar -cf - --null -T - --ignore-failed-read 2>/dev/null | tar -xf - -C "$work/tillsync"
[ -f "$work/tillsync/debian/rules" ] || fail "copying the checkout (git ls-files) to $work"
# The system's PATH, as a clean build root has: a python3 of pyenv or a venv first on PATH would
# be the one pybuild builds python3-tillsync with (and it lacks Debian's build modules).
(cd "$work/tillsync" && PATH=/usr/sbin:/usr/bin:/sbin:/bin DEB_BUILD_OPTIONS="nocheck parallel=$JOBS" \
    nice dpkg-buildpackage -us -uc -Pnocheck) \
    >"$work/build.log" 2>&1 || { tail -60 "$work/build.log"; fail "dpkg-buildpackage"; }
for p in $PKGS; do
    ls "$work/${p}_${deb_version}"_*.deb >/dev/null 2>&1 || fail "no .deb for $p"
done
echo "ok: built $(cd "$work" && echo ./*.deb) ($(($(date +%s) - t0)) s)"

echo "-- lintian"
lintian --fail-on error --tag-display-limit 0 "$work"/*.changes >"$work/lintian.log" 2>&1 ||
    { cat "$work/lintian.log"; fail "lintian reports errors (E: above)"; }
sed 's/^/   /' "$work/lintian.log"
echo "ok: lintian: no errors ($(grep -c '^W:' "$work/lintian.log" || true) warnings)"

echo "-- apt-get install ./*.deb"
mkdir "$work/debs"
for p in $PKGS; do cp "$work/${p}_${deb_version}"_*.deb "$work/debs/"; done
chmod 755 "$work/debs"
# --no-install-recommends: avahi-daemon's recommends (libnss-mdns) rewrite nsswitch.conf.
# What apt will install is asked first (-s), so the purge at the end takes exactly that away.
brought=$(cd "$work/debs" && apt-get -s install --no-install-recommends ./*.deb |
    sed -n 's/^Inst \([^ ]*\) .*/\1/p' | tr '\n' ' ')
(cd "$work/debs" && apt_get install --no-install-recommends ./*.deb) >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "apt-get install ./*.deb"; }
for p in $PKGS; do
    [ "$(dpkg-query -W -f='${Version}' "$p")" = "$deb_version" ] || fail "$p $deb_version not installed"
done

# The tool and the library it loads: the package's, without LD_LIBRARY_PATH.
out=$(env -u LD_LIBRARY_PATH /usr/bin/tillsync --version) || fail "tillsync --version"
[ "$out" = "tillsync $version" ] || fail "tillsync --version says '$out', not 'tillsync $version'"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
loaded=$(env -u LD_LIBRARY_PATH ldd /usr/bin/tillsync | sed -n 's/.*libtillsync.so.0 => \(.*\) (.*/\1/p')
[ "$loaded" = "/lib/$multiarch/libtillsync.so.0" ] || [ "$loaded" = "/usr/lib/$multiarch/libtillsync.so.0" ] ||
    fail "/usr/bin/tillsync loads libtillsync.so.0 from '$loaded'"
[ -f /usr/share/man/man1/tillsync.1.gz ] || fail "no tillsync(1) in /usr/share/man/man1"
echo "ok: tillsync --version: $out, library $loaded"

# The SQLite extension in libtillsync0, loaded by the stock shell: uuid7() and a replicated write
# sealed on a connection tillsync did not open.
ext=/usr/lib/$multiarch/tillsync/tillsync
[ -f "$ext.so" ] || fail "no $ext.so in libtillsync0"
env -u LD_LIBRARY_PATH /usr/bin/tillsync init "$work/ext.db" >/dev/null || fail "tillsync init"
got=$(env -u LD_LIBRARY_PATH sqlite3 "$work/ext.db" ".load $ext" \
    "CREATE TABLE p(id TEXT PRIMARY KEY DEFAULT (uuid7()), name TEXT)" \
    "SELECT tillsync_replicate('p')" "INSERT INTO p(name) VALUES('pear')" \
    "SELECT length(id) FROM p" "SELECT tillsync_seal()" 2>&1) || fail "the extension: $got"
[ "$(printf '%s' "$got" | tr '\n' ' ')" = "1 36 1" ] || fail "the extension printed '$got'"
echo "ok: .load $ext: uuid7(), tillsync_replicate(), tillsync_seal()"

# The demo: three nodes on loopback, then the verdict (the same lines as tests/cli/cli_forms.sh).
mkdir "$work/tmp"
env -u LD_LIBRARY_PATH TMPDIR="$work/tmp" /usr/bin/tillsync demo >"$work/demo.out" 2>&1 ||
    { cat "$work/demo.out"; fail "tillsync demo exited non-zero"; }
for step in "started three nodes" "reached till2 and till3 over the network" \
    "all three tills show the same content" "every product's stock checks out" "nodes stopped"; do
    grep -q "$step" "$work/demo.out" || { cat "$work/demo.out"; fail "tillsync demo does not say '$step'"; }
done
echo "ok: tillsync demo: $(grep -c . "$work/demo.out") lines, all five steps"

# The -dev package: pkg-config and find_package, with nothing but the system's paths.
[ "$(pkg-config --modversion tillsync)" = "$version" ] || fail "pkg-config --modversion tillsync"
app=$work/app
mkdir "$app"
cp examples/hello.c examples/Makefile examples/CMakeLists.txt "$app/"
run_hello() { # PROGRAM: builds a till and prints the library's version; again on the same till
    rm -f "$app/till.db" "$app/till.db.key"
    env -u LD_LIBRARY_PATH "$1" "$app/till.db" >"$app/hello.out" 2>&1 &&
        grep -q "^tillsync $version (ABI 0)" "$app/hello.out" &&
        env -u LD_LIBRARY_PATH "$1" "$app/till.db" >/dev/null 2>&1 ||
        { cat "$app/hello.out"; fail "$1 did not run"; }
}
(unset PKG_CONFIG_PATH && make -s -C "$app" CFLAGS="-O2 -Wall -Wextra -Werror") >"$app/make.log" 2>&1 ||
    { cat "$app/make.log"; fail "examples/Makefile (pkg-config) against the installed -dev"; }
run_hello "$app/hello"
run_hello "$app/hello_static"
if readelf -dW "$app/hello_static" | grep -q "NEEDED.*libtillsync"; then
    fail "hello_static needs libtillsync.so"
fi
cmake -S "$app" -B "$app/cm" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" \
    >"$app/cm.log" 2>&1 && cmake --build "$app/cm" >>"$app/cm.log" 2>&1 ||
    { cat "$app/cm.log"; fail "examples/CMakeLists.txt (find_package) against the installed -dev"; }
run_hello "$app/cm/hello"
run_hello "$app/cm/hello_static"
echo "ok: pkg-config --modversion $version; hello and hello_static built by pkg-config and find_package"

# python3-tillsync: the installed package (not the source's python/tillsync) over the installed
# libtillsync.so.0, with the project's pytest suite run from a copy.
/usr/bin/python3 -c 'import sys, tillsync; sys.exit(not tillsync.__file__.startswith("/usr/lib/python3/dist-packages/"))' ||
    fail "import tillsync does not find the installed python3-tillsync"
cp -r python/tests "$work/pytests"
(cd "$work" && env -u LD_LIBRARY_PATH -u TILLSYNC_LIBRARY PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider pytests >"$work/pytest.log" 2>&1) ||
    { tail -40 "$work/pytest.log"; fail "the Python tests against the installed python3-tillsync"; }
echo "ok: python3-tillsync: $(tail -1 "$work/pytest.log")"

# The service: the unit as systemd reads it, the system user it runs as, and its two commands
# (ExecStartPre's init, ExecStart's --config with the example settings) as that user.
unit=/lib/systemd/system/tillsync@.service
[ -f "$unit" ] || fail "$unit not installed"
systemd-analyze verify "$unit" >"$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "systemd-analyze verify $unit"; }
[ ! -s "$work/verify.log" ] || { cat "$work/verify.log"; fail "systemd-analyze verify $unit says something"; }
home=$(getent passwd tillsync | cut -d: -f6) || fail "no system user tillsync (sysusers)"
[ "$home" = /var/lib/tillsync ] || fail "the user tillsync's home is '$home'"
[ -d /etc/tillsync ] || fail "no /etc/tillsync (ConfigurationDirectory, for INSTANCE.conf)"
svc=$work/svc
mkdir "$svc"
cp /usr/share/doc/tillsync/tillsync.conf.example "$svc/till1.conf"
$SUDO chown -R tillsync:tillsync "$svc"
as_tillsync() { $SUDO setpriv --reuid=tillsync --regid=tillsync --init-groups env -u LD_LIBRARY_PATH "$@"; }
as_tillsync sh -c "umask 077 && /usr/bin/tillsync init $svc/till1.db" >"$svc/init.log" 2>&1 ||
    { cat "$svc/init.log"; fail "tillsync init as the user tillsync (ExecStartPre)"; }
as_tillsync /usr/bin/tillsync run --config "$svc/till1.conf" "$svc/till1.db" --print-config \
    >"$svc/config.out" 2>&1 || { cat "$svc/config.out"; fail "tillsync run --config (ExecStart) --print-config"; }
grep -q "^listen = tcp://0.0.0.0:7400" "$svc/config.out" || { cat "$svc/config.out"; fail "--print-config"; }
echo "ok: systemd-analyze verify $unit; user tillsync; init and run --config as tillsync"

# The relay's unit (docs/RELAY.md, "As a service"): installed but neither enabled nor started
# (debian/rules), verified, its user, and its ExecStartPre (relay init) and a status as that user.
relay_unit=/lib/systemd/system/tillsync-relay.service
[ -f "$relay_unit" ] || fail "$relay_unit not installed"
systemd-analyze verify "$relay_unit" >"$work/verify-relay.log" 2>&1 ||
    { cat "$work/verify-relay.log"; fail "systemd-analyze verify $relay_unit"; }
[ ! -s "$work/verify-relay.log" ] || { cat "$work/verify-relay.log"; fail "systemd-analyze verify $relay_unit says something"; }
[ ! -e /etc/systemd/system/multi-user.target.wants/tillsync-relay.service ] ||
    fail "the package enabled tillsync-relay.service (a till must not run a relay by itself)"
home=$(getent passwd tillsync-relay | cut -d: -f6) || fail "no system user tillsync-relay (sysusers)"
[ "$home" = /var/lib/tillsync-relay ] || fail "the user tillsync-relay's home is '$home'"
rsvc=$work/relay
mkdir "$rsvc"
$SUDO chown tillsync-relay:tillsync-relay "$rsvc"
as_relay() { $SUDO setpriv --reuid=tillsync-relay --regid=tillsync-relay --init-groups env -u LD_LIBRARY_PATH "$@"; }
as_relay sh -c "umask 077 && STATE_DIRECTORY=$rsvc && test -e \$STATE_DIRECTORY/relay.key || exec /usr/bin/tillsync relay init \$STATE_DIRECTORY" \
    >"$rsvc.log" 2>&1 || { cat "$rsvc.log"; fail "tillsync relay init as the user tillsync-relay (ExecStartPre)"; }
as_relay /usr/bin/tillsync relay status "$rsvc" >"$rsvc.status" 2>&1 ||
    { cat "$rsvc.status"; fail "tillsync relay status as the user tillsync-relay"; }
grep -q "^public key: " "$rsvc.status" || { cat "$rsvc.status"; fail "relay status"; }
echo "ok: systemd-analyze verify $relay_unit (not enabled); user tillsync-relay; relay init and status as it"

echo "-- apt-get purge"
apt_get purge $PKGS >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "apt-get purge $PKGS"; }
for f in /usr/bin/tillsync "$unit" "$relay_unit" /etc/tillsync "/usr/lib/$multiarch/libtillsync.so.0"; do
    [ ! -e "$f" ] || fail "$f is left after the purge"
done
echo "ok: purged ($brought); $(($(date +%s) - t0)) s in all"
