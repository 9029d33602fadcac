#!/usr/bin/env bash
# Starts Debian's libvirtd and virtlogd (as root) unless they already answer on
# qemu:///system: the reference the conformance suite and the benchmarks
# compare vmshim against. Idempotent.
set -euo pipefail

# Huge pages for the conformance suite's <hugepages> guests, before libvirtd
# starts (it looks for hugetlbfs mounts once, at start): a hugetlbfs mount of
# the default page size and 80 free pages (both sides' guests are 64 MiB and
# run one after the other). A host that cannot do this still runs the suite;
# libvirt then refuses those guests and the suite counts them as such.
prepare_hugepages() {
  local size free nr
  size=$(awk '/^Hugepagesize:/ {print $2}' /proc/meminfo)
  [[ -n $size ]] || return 0
  if ! awk '$3 == "hugetlbfs"' /proc/mounts | grep -q .; then
    mkdir -p /dev/hugepages && mount -t hugetlbfs -o "pagesize=${size}k" hugetlbfs /dev/hugepages \
      || { echo "start-libvirt: cannot mount hugetlbfs; huge page guests will be refused" >&2; return 0; }
  fi
  free=$(cat "/sys/kernel/mm/hugepages/hugepages-${size}kB/free_hugepages")
  nr=$(cat "/sys/kernel/mm/hugepages/hugepages-${size}kB/nr_hugepages")
  if (( free < 80 )); then
    echo $(( nr + 80 - free )) > "/sys/kernel/mm/hugepages/hugepages-${size}kB/nr_hugepages" \
      || echo "start-libvirt: cannot reserve huge pages; huge page guests may fail" >&2
  fi
}
if [[ $(id -u) -eq 0 ]]; then prepare_hugepages; fi

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
