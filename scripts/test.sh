#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first.
# The end-to-end tests start real hub processes and use mosquitto clients,
# paho-mqtt (Python), promtool (Debian's prometheus package) and a cluster
# of Debian's nats-server (2.9.10 on Debian 12: MQTT, JetStream, clustering);
# the operations tests run a real Prometheus (same package) and validate
# deploy/ with systemd-analyze, check-jsonschema and kubernetes-validate;
# the API test runs schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v nats-server >/dev/null || missing+=(nats-server)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The conformance tests drive paho-mqtt through tests/conformance/*.py.
# paho-mqtt 2 (CallbackAPIVersion); a Debian-managed Python refuses a plain
# pip install (PEP 668), hence the second try.
if ! python3 -c 'from paho.mqtt.client import CallbackAPIVersion' 2>/dev/null; then
    echo "installing paho-mqtt" >&2
    python3 -m pip install --quiet 'paho-mqtt>=2,<3' 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages 'paho-mqtt>=2,<3'
fi

# The deployment tests validate the compose file against the compose
# schema and the Kubernetes manifests against Kubernetes' own, offline.
for tool in check-jsonschema kubernetes-validate; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing $tool" >&2
        python3 -m pip install --quiet "$tool" 2>/dev/null ||
            python3 -m pip install --quiet --break-system-packages "$tool"
    fi
done

# The API test runs schemathesis against a live hub (tests/e2e/openapi.rs).
# It has many dependencies of its own, so it gets a virtual environment
# in the user's cache, where the test looks for it; pinned, as its flags
# change between releases.
schemathesis_venv="${XDG_CACHE_HOME:-$HOME/.cache}/yizhan/schemathesis"
if ! "$schemathesis_venv/bin/schemathesis" --version 2>/dev/null | grep -q ' 4\.32\.5$'; then
    echo "installing schemathesis into $schemathesis_venv" >&2
    python3 -m venv "$schemathesis_venv"
    "$schemathesis_venv/bin/pip" install --quiet 'schemathesis==4.32.5'
fi

# The end-to-end tests run the hub binary: build every binary first.
cargo build --workspace --bins
# Errors returned by tests print their message and context only (a
# backtrace per error buries the message in CI excerpts); panics keep
# RUST_BACKTRACE's.
export RUST_LIB_BACKTRACE=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Unit tests and the end-to-end binary (benches are run by hand, see
# docs/benchmarks.md; there are no doc tests).
cargo test --workspace --lib --bins --tests 2>&1 | tee "$log"
# One closing line for the whole workspace.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
