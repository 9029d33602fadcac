#!/usr/bin/env bash
# Runs every test: the Swift suites (unit, golden argv, QMP against a fake and a
# real monitor, the shim end to end with real QEMU and the test guest) and the
# Python grpcio client of the control API, then the conformance suite against
# a real libvirt (it starts libvirtd and virtlogd when they are not running).
# Needs what scripts/apt-deps.sh installs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

scripts/build-test-guest.sh
swift build --build-tests
bin=$(swift build --show-bin-path)
export VMSHIM_BINARY=$bin/vmshim

# libvirt first: the Swift tests use its network service (interface type='network').
scripts/start-libvirt.sh
echo "== Swift tests"
swift test --skip-build

echo "== Python tests: control API (grpcio), containers/ (kubernetes-validate)"
venv=${VMSHIM_VENV:-$here/.cache/venv}
if [[ ! -x $venv/bin/python ]]; then
  /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools kubernetes-validate
"$venv/bin/python" -m unittest discover -s Tests/python -v
echo "== Conformance: the corpus booted under libvirt and under vmshim, guest-visible hardware compared"
/usr/bin/python3 Tests/conformance/libvirt_conformance.py --vmshim "$VMSHIM_BINARY"
echo "== all tests passed"
