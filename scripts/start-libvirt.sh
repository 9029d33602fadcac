#!/usr/bin/env bash
# Starts Debian's libvirtd and virtlogd (as root) unless they already answer on
# qemu:///system: the reference the conformance suite and the benchmarks
# compare vmshim against. Idempotent.
set -euo pipefail
if virsh -q -c qemu:///system version >/dev/null 2>&1; then exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "start-libvirt: run as root" >&2; exit 1; }
getent passwd libvirt-qemu >/dev/null || { echo "start-libvirt: user libvirt-qemu is missing (apt-get install libvirt-daemon-system)" >&2; exit 1; }
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 100); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "start-libvirt: libvirtd does not answer on qemu:///system after 10 s" >&2
exit 1
