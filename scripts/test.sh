#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first.
# The end-to-end tests start real hub processes and use mosquitto clients.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null || missing+=(mosquitto)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The end-to-end tests run the hub binary: build every binary first.
cargo build --workspace --bins
cargo test --workspace
