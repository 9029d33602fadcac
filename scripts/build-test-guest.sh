#!/usr/bin/env bash
# Builds the tiny test/example guest from Debian packages: the cloud kernel and
# a busybox-static initramfs whose /init prints a marker on the serial console
# and runs acpid, so the ACPI power button powers the guest off.
#
#   scripts/build-test-guest.sh [OUTDIR]     (default /var/lib/vmshim/images/tiny)
#
# Kernel command-line words the init understands (see tests and examples):
#   vmshim.noacpid        ignore the power button (tests the shutdown timeout)
#   vmshim.counter        print "vmshim-counter N" on the serial console every second
#   vmshim.action=X       after the marker: poweroff | reboot | panic | crash
#   vmshim.fill=N         after the marker, fill N MiB of guest memory with
#                         non-zero data (a tmpfs file), then print VMSHIM-FILLED
#                         (save/restore benchmarks need memory that is not zero)
# The script is idempotent: it rebuilds only when its inputs changed.
set -euo pipefail

out=${1:-${VMSHIM_GUEST_DIR:-/var/lib/vmshim/images/tiny}}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${VMSHIM_CACHE_DIR:-$here/.cache}/guest-debs
mkdir -p "$out" "$cache"

need() { command -v "$1" >/dev/null || { echo "build-test-guest: '$1' is missing (apt-get install $2)" >&2; exit 1; }; }
need apt-get apt; need dpkg-deb dpkg; need cpio cpio; need gzip gzip

kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[[ -n $kpkg ]] || { echo "build-test-guest: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
kver=${kpkg#linux-image-}

stamp="$kpkg busybox-static $(sha256sum "$0" | cut -c1-16)"
if [[ -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" && -f $out/vmlinuz && -f $out/initrd.img ]]; then
  echo "test guest up to date in $out ($kver)"
  exit 0
fi

# apt-get download runs as _apt and needs a directory it may write to.
chmod 0777 "$cache"
(cd "$cache" && { ls "$kpkg"_*.deb >/dev/null 2>&1 || apt-get download -q "$kpkg"; } \
             && { ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -q busybox-static; })

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$cache/$(cd "$cache" && ls "$kpkg"_*.deb | head -n1)" "$work/kernel"
dpkg-deb -x "$cache/$(cd "$cache" && ls busybox-static_*.deb | head -n1)" "$work/busybox"

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,etc/acpi/PWRF,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for m in drivers/input/evdev drivers/acpi/button drivers/misc/pvpanic/pvpanic drivers/misc/pvpanic/pvpanic-mmio; do
  src=$(ls "$work/kernel/lib/modules/$kver/kernel/$m".ko* 2>/dev/null | head -n1 || true)
  if [[ -n $src ]]; then
    case $src in
      *.xz) xz -dc "$src" > "$root/lib/modules/$(basename "$m").ko" ;;
      *.zst) zstd -qdc "$src" > "$root/lib/modules/$(basename "$m").ko" ;;
      *) cp "$src" "$root/lib/modules/$(basename "$m").ko" ;;
    esac
  fi
done

cat > "$root/etc/acpi/PWRF/00000080" <<'ACPI'
#!/bin/busybox sh
echo "vmshim-guest: power button, powering off" > /dev/ttyS0
/bin/busybox poweroff -f
ACPI
chmod 0755 "$root/etc/acpi/PWRF/00000080"

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in evdev button pvpanic pvpanic-mmio; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
cmdline=$(cat /proc/cmdline)
has() { case " $cmdline " in *" $1 "*) return 0;; esac; return 1; }
action=
for w in $cmdline; do case $w in vmshim.action=*) action=${w#vmshim.action=};; esac; done
mkdir -p /var/log /var/run
# The marker promises that the power button works, so wait until acpid holds
# the input device open: a press before that would be lost.
if ! has vmshim.noacpid; then
  acpid -c /etc/acpi
  n=0
  while [ $n -lt 100 ]; do
    p=$(pidof acpid) && ls -l /proc/$p/fd 2>/dev/null | grep -q /dev/input/event && break
    n=$((n + 1)); usleep 50000
  done
fi
echo "VMSHIM-GUEST-READY" > /dev/ttyS0
fill=
for w in $cmdline; do case $w in vmshim.fill=*) fill=${w#vmshim.fill=};; esac; done
if [ -n "$fill" ]; then
  # 1 MiB of random data copied N times: urandom itself is slow under TCG.
  mkdir -p /fill && mount -t tmpfs -o size=${fill}m,nr_inodes=16 tmpfs /fill
  dd if=/dev/urandom of=/fill/seed bs=1048576 count=1 2>/dev/null
  n=1
  while [ $n -lt $fill ]; do cat /fill/seed; n=$((n + 1)); done > /fill/data
  echo "VMSHIM-FILLED $fill" > /dev/ttyS0
fi
case $action in
  poweroff) poweroff -f ;;
  reboot) reboot -f ;;
  panic|crash) echo c > /proc/sysrq-trigger ;;
esac
i=0
while true; do
  if has vmshim.counter; then echo "vmshim-counter $i" > /dev/ttyS0; fi
  i=$((i + 1))
  sleep 1
done
INIT
chmod 0755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.img.tmp"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
chmod 0644 "$out/initrd.img" "$out/vmlinuz"
echo "$stamp" > "$out/.stamp"
echo "test guest built in $out ($kver)"
