#!/usr/bin/env bash
# A district on one hub (issue 9): a release hub, and `device-sim run
# --centers 101` (1,818 devices over mTLS, real time) against it. Once every
# device is connected the hub's CPU (utime + stime from /proc) and RSS are
# sampled for the measuring window; prints cores used on average and peak
# RSS. Arguments: [centers] [measuring window in seconds] (101, 300).
set -euo pipefail
cd "$(dirname "$0")/.."
centers=${1:-101}
window=${2:-300}

cargo build --release -p hub -p device-sim --bins
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
dir=$(mktemp -d)
hub_pid=""
sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

token=district-bench-admin-token-0123456789
cat > "$dir/hub.toml" <<TOML
data_dir = "$dir/data"
[broker]
listen = "127.0.0.1:0"
[api]
listen = "127.0.0.1:0"
[log]
filter = "warn"
TOML
YIZHAN_ADMIN_TOKEN=$token target/release/hub --config "$dir/hub.toml" >"$dir/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 1 200); do
    [ -f "$dir/data/endpoints.json" ] && break
    sleep 0.05
done
api=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['api'])" "$dir/data/endpoints.json")
mqtt_port=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mqtt'].rsplit(':',1)[1])" "$dir/data/endpoints.json")

devices=$((centers * 18))
YIZHAN_ADMIN_TOKEN=$token target/release/device-sim run --api "http://$api" \
    --mqtt-host localhost --mqtt-port "$mqtt_port" --centers "$centers" \
    --cert-dir "$dir/certs" --duration "$((window + 600))s" >"$dir/sim.log" 2>&1 &
sim_pid=$!

online() {
    curl -s -H "Authorization: Bearer $token" "http://$api/metrics" |
        awk '/^yizhan_devices_online/ { n += $2 } END { print n + 0 }'
}
echo "waiting for $devices devices online" >&2
started=$(date +%s)
until [ "$(online)" -ge "$devices" ]; do
    if [ $(($(date +%s) - started)) -gt 600 ]; then
        echo "only $(online) of $devices online after 10 minutes" >&2
        exit 1
    fi
    sleep 2
done
echo "all $devices online after $(($(date +%s) - started)) s; measuring ${window} s" >&2

ticks=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$hub_pid/stat"; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$hub_pid/status"; }
cpu_start=$(cpu)
t_start=$(date +%s.%N)
peak=0
echo "RSS at the start: $(($(rss_kb) / 1024)) MB" >&2
for tick in $(seq 1 "$((window / 5))"); do
    sleep 5
    rss=$(rss_kb)
    [ "$rss" -gt "$peak" ] && peak=$rss
    [ $((tick % 12)) -eq 0 ] && echo "RSS after $((tick * 5)) s: $((rss / 1024)) MB" >&2
done
cpu_end=$(cpu)
t_end=$(date +%s.%N)
python3 - "$cpu_start" "$cpu_end" "$t_start" "$t_end" "$ticks" "$peak" "$devices" "$(online)" <<'PY'
import sys
c0, c1, t0, t1, hz, peak, devices, online = sys.argv[1:]
cores = (float(c1) - float(c0)) / float(hz) / (float(t1) - float(t0))
print(f"devices {devices}, online at the end {online}")
print(f"hub CPU: {cores:.3f} cores on average over {float(t1) - float(t0):.0f} s")
print(f"hub RSS: {int(peak) / 1024:.1f} MB at its peak")
PY
