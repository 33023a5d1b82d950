# Sourced by the benchmark scripts that start mosquitto and the hub
# themselves (peer-bench.sh, drain-bench.sh): from the repository's root,
# checks mosquitto is installed, builds hub and device-sim in release and
# raises the open-files limit (clients and brokers share this machine: the
# hub holds up to three sockets per connection).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
    echo "mosquitto is missing: apt-get install mosquitto" >&2
    exit 1
fi
cargo build --release -p hub -p device-sim --bins
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
