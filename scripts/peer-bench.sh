#!/usr/bin/env bash
# The peer benchmark in one command (issue 3): builds release, raises the
# open-files limit (clients and brokers share this machine: the hub holds
# three sockets per mTLS device) and runs `device-sim peer-bench`, which
# starts mosquitto and the hub itself, drives the same loads at both and
# prints the side-by-side table. Arguments are passed on (e.g. --runs 5).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
    echo "mosquitto is missing: apt-get install mosquitto" >&2
    exit 1
fi
cargo build --release -p hub -p device-sim --bins
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec target/release/device-sim peer-bench --hub-binary target/release/hub "$@"
