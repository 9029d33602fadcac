#!/usr/bin/env bash
# Installs, from Debian 12's apt, everything vmshim needs to build, run its
# example guest and run its tests. Swift itself (6.2 or newer) is a prerequisite.
set -euo pipefail
packages=(
  qemu-system-x86 qemu-utils          # the hypervisor and qemu-img
  libxml2-dev libxml2-utils pkg-config # domain XML parsing (libxml2 via pkg-config)
  libcap-dev                          # clearing QEMU's capabilities (libcap)
  libvirt-daemon-system libvirt-clients # libvirt's RelaxNG schema for 'vmshim validate', its networks, the bench reference
  python3-libvirt                     # bench/registrar.py's libvirt reference (virConnectListAllDomains)
  dnsmasq-base                        # libvirt's 'default' NAT network (interface type='network' tests)
  ovmf                                # UEFI firmware and its descriptors (<os firmware='efi'>; conformance suite)
  iproute2                            # 'ip': the bridge the tests and the conformance suite attach taps to
  busybox-static cpio                 # the test guest's initramfs
  python3 python3-venv                # the Python gRPC client test (grpcio from PyPI in a venv)
  protobuf-compiler                   # scripts/gen-protos.sh
)
if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
