#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs what is missing, builds tillsync, and runs the demo.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"${JOBS:-2}"
./build/tillsync demo
