#!/usr/bin/env bash
# The peer benchmark in one command (issue 3): builds release, raises the
# open-files limit and runs `device-sim peer-bench`, which starts mosquitto
# and the hub itself, drives the same loads at both and prints the
# side-by-side table. Arguments are passed on (e.g. --runs 5).
source "$(dirname "$0")/bench-setup.sh"
exec target/release/device-sim peer-bench --hub-binary target/release/hub "$@"
