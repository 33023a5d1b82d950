#!/usr/bin/env bash
# The uplink drain benchmark in one command (issue 12): builds release,
# raises the open-files limit (the steady load is 1,818 connections) and
# runs `device-sim drain-bench`, which starts mosquitto (the district's
# broker), a TCP proxy it cuts, a subscriber and the hub itself, and prints
# the table of every run and the median. Arguments are passed on (e.g.
# --runs 5, --backlog 300000, --uplink-setting 'max_in_flight = 1024').
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
    echo "mosquitto is missing: apt-get install mosquitto" >&2
    exit 1
fi
cargo build --release -p hub -p device-sim --bins
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec target/release/device-sim drain-bench --hub-binary target/release/hub "$@"
