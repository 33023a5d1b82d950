#!/usr/bin/env bash
# The uplink drain benchmark in one command (issue 12): builds release,
# raises the open-files limit and runs `device-sim drain-bench`, which
# starts mosquitto (the district's broker), a TCP proxy it cuts, a
# subscriber and the hub itself, and prints the table of every run and
# the median. Arguments are passed on (e.g. --runs 5, --backlog 300000,
# --uplink-setting 'max_in_flight = 1024').
source "$(dirname "$0")/bench-setup.sh"
exec target/release/device-sim drain-bench --hub-binary target/release/hub "$@"
