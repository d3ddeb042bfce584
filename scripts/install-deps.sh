#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages tillsync needs, only when something is missing.
# --no-install-recommends matters: libnss-mdns (recommended by avahi) rewrites nsswitch.conf.
set -eu
PKGS="build-essential g++ cmake pkg-config libsqlite3-dev sqlite3 libsodium-dev libzmq3-dev libmsgpack-dev
libavahi-client-dev avahi-daemon avahi-utils dbus libcriterion-dev libcsv-dev libjansson-dev libzstd-dev
iproute2 iputils-ping iptables libnetfilter-queue-dev clang libclang-rt-14-dev clang-format valgrind nftables faketime
libsystemd-dev libinih-dev
python3 python3-venv python3-pip python3-pytest python3-setuptools python3-wheel
libmicrohttpd-dev curl"
# The Debian packages (scripts/deb.sh, docs/PACKAGING.md): dpkg-buildpackage with debhelper, lintian,
# and systemd for systemd-analyze verify and the sysusers entry of the tillsync package.
PKGS="$PKGS debhelper lintian systemd dh-python pybuild-plugin-pyproject python3-all"
# The console's browser test (tests/browser): Debian's chromium and node, and npm for its
# puppeteer-core (`npm ci`). A node from elsewhere (NodeSource's nodejs) brings its own npm and
# conflicts with Debian's npm package: npm only when no npm is there.
PKGS="$PKGS chromium nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"
# The relay's store on NATS JetStream: the client library, and the server for its tests.
PKGS="$PKGS libnats-dev nats-server"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
