#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (with Swift installed) to a booted
# example guest: installs the apt packages, builds vmshim, builds the tiny test
# guest, boots examples/tiny.xml until it prints its marker on the serial
# console, then shuts it down through the power button.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

scripts/apt-deps.sh
vmshim=$(scripts/build-release.sh | tail -n 1)
scripts/build-test-guest.sh

run_root=${VMSHIM_RUN_ROOT:-/run/vmshim}
echo "== booting examples/tiny.xml (run root $run_root)"
# Start paused so the serial console can be opened before the guest prints.
"$vmshim" run --run-root "$run_root" --paused examples/tiny.xml &
shim=$!
trap 'kill "$shim" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  "$vmshim" status --run-root "$run_root" tiny 2>/dev/null | grep -q 'paused' && break
  kill -0 "$shim" 2>/dev/null || { echo "vmshim exited before the guest started" >&2; exit 1; }
  sleep 0.05
done
pty=$("$vmshim" status --run-root "$run_root" tiny --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["charDevices"]["serial0"])')
exec 3<"$pty"
"$vmshim" resume --run-root "$run_root" tiny
if timeout 60 grep -a -m1 VMSHIM-GUEST-READY <&3; then
  echo "== the example guest booted; shutting it down"
else
  echo "the example guest did not print its marker within 60 s" >&2
  "$vmshim" destroy --run-root "$run_root" tiny || true
  exit 1
fi
exec 3<&-
"$vmshim" shutdown --run-root "$run_root" tiny
wait "$shim"
trap - EXIT
echo "== done: run it yourself with  $vmshim examples/tiny.xml"
