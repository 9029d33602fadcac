#!/usr/bin/env python3
"""Conformance of vmshim against real libvirt: same domain XML, same guest hardware.

For every domain XML in the corpus (default: libvirt's own test XMLs in
Tests/ShimKitTests/Fixtures/libvirt-tests) the suite

1. prepares one input for both sides (see `prepare`): type='qemu', disk sources
   pointed at scratch images, host-only endpoints (sockets, files, VNC listen
   addresses, scripts) pointed into a scratch directory, a fixed MAC where the
   XML has none;
2. boots it paused under libvirt (`virsh define` + `virsh start --paused`) and
   gathers what the guest can see over QMP (`gather`), then destroys it;
3. boots the same file paused under vmshim (`vmshim run --paused`), gathers the
   same over vmshim's QMP pass-through, then destroys it;
4. compares the two after normalising management-private names (device ids,
   node names, chardev/netdev ids, socket and image paths).

Outcomes: `identical`, `different` (each difference listed), `vmshim refuses`
(vmshim's error names the construct), `libvirt refuses` (libvirt 9.0 does not
define or start it on this machine: not counted). It prints `N of M identical`
with M = the files libvirt accepts, and exits 1 when a file vmshim accepts
differs from libvirt or when vmshim refuses one without naming an element.

Needs root, a running libvirtd and virtlogd (qemu:///system), qemu-img.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_CORPUS = REPO / "Tests/ShimKitTests/Fixtures/libvirt-tests"
#: Domain XML shaped like what virt-install and KubeVirt write (ours, not libvirt's).
REAL_TOOLS_CORPUS = HERE / "real-tools"
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]
QEMU = "/usr/bin/qemu-system-x86_64"
GUEST_DIR = Path(os.environ.get("VMSHIM_GUEST_DIR", "/var/lib/vmshim/images/tiny"))


class Refused(Exception):
    """One side would not define or start the domain."""


class QMPError(Exception):
    """QEMU answered a query with an error (some properties do not exist on
    every machine); anything else failing while gathering is a harness error."""


# ---------------------------------------------------------------- preparation


@dataclass
class Prepared:
    xml: str
    name: str
    listeners: list[socket.socket] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def _register_namespaces(text: str) -> None:
    for prefix, uri in re.findall(r'xmlns:([A-Za-z_][\w.-]*)=["\']([^"\']+)["\']', text):
        ET.register_namespace(prefix, uri)


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True)


def prepare(source: Path, work: Path, test: str) -> Prepared:
    """The one input both sides boot. Everything changed is host-side only."""
    text = source.read_text()
    _register_namespaces(text)
    root = ET.fromstring(text)
    name = f"conf-{test}"
    prepared = Prepared(xml="", name=name)
    root.set("type", "qemu")
    root.find("name").text = name  # type: ignore[union-attr]

    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    emulator = devices.find("emulator")
    if emulator is not None:
        emulator.text = QEMU

    os_element = root.find("os")
    if os_element is not None:
        for tag, file in (("kernel", "vmlinuz"), ("initrd", "initrd.img")):
            element = os_element.find(tag)
            if element is not None:
                element.text = str(GUEST_DIR / file)

    counter = iter(range(1, 10_000))

    def scratch_image(fmt: str, backing: tuple[str, str] | None) -> str:
        path = work / f"disk{next(counter)}.{fmt}"
        args = ["create", "-q", "-f", fmt]
        if backing:
            args += ["-b", backing[0], "-F", backing[1]]
        _qemu_img(*args, str(path), "16M")
        return str(path)

    def rewrite_store(element: ET.Element) -> tuple[str, str] | None:
        """Creates the image chain of a <disk> or <backingStore> bottom-up;
        returns (path, format) of this layer, or None if it is not local."""
        if element.get("type", "file") not in ("file", "block"):
            return None
        source = element.find("source")
        if source is None:
            return None
        if element.tag == "disk":
            driver = element.find("driver")
            fmt = driver.get("type", "raw") if driver is not None else "raw"
        else:
            fmt_element = element.find("format")
            fmt = fmt_element.get("type", "raw") if fmt_element is not None else "raw"
        backing_element = element.find("backingStore")
        backing = None
        if backing_element is not None and backing_element.find("source") is not None:
            backing = rewrite_store(backing_element)
            if backing is None:
                return None
        if fmt not in ("raw", "qcow2", "vmdk", "qed", "vpc", "vdi"):
            fmt = "raw"
        path = scratch_image(fmt, backing)
        element.set("type", "file")
        for attribute in ("dev", "file"):
            source.attrib.pop(attribute, None)
        source.set("file", path)
        return (path, fmt)

    for disk in devices.findall("disk"):
        rewrite_store(disk)

    sockets: dict[str, str] = {}

    def local_socket(original: str | None, connect: bool) -> str:
        key = original or f"anon{len(sockets)}"
        if key not in sockets:
            path = str(work / f"sock{len(sockets) + 1}")
            sockets[key] = path
            if connect:
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(path)
                os.chmod(path, 0o777)
                listener.listen(8)
                prepared.listeners.append(listener)
        return sockets[key]

    for kind in ("serial", "console", "channel", "parallel"):
        for chardev in devices.findall(kind):
            source = chardev.find("source")
            if chardev.get("type") == "unix" and source is not None and source.get("path"):
                connect = source.get("mode", "connect") == "connect"
                source.set("path", local_socket(source.get("path"), connect))
            elif chardev.get("type") == "file" and source is not None:
                source.set("path", str(work / f"{kind}{next(counter)}.out"))
            log = chardev.find("log")
            if log is not None and log.get("file"):
                log.set("file", str(work / f"{kind}{next(counter)}.log"))

    for graphics in devices.findall("graphics"):
        if graphics.get("listen"):
            graphics.set("listen", "127.0.0.1")
        for listen in graphics.findall("listen"):
            if listen.get("address"):
                listen.set("address", "127.0.0.1")
            if listen.get("socket"):
                # QEMU binds it; under libvirt QEMU runs as libvirt-qemu
                sockets_dir = work / "qemu-sockets"
                sockets_dir.mkdir(exist_ok=True)
                sockets_dir.chmod(0o1777)
                listen.set("socket", str(sockets_dir / f"vnc{next(counter)}.sock"))

    macs = iter(range(1, 256))
    for interface in devices.findall("interface"):
        source = interface.find("source")
        if interface.get("type") == "bridge" and source is not None:
            source.set("bridge", ensure_bridge())
        if interface.get("type") == "network" and source is not None and source.get("network"):
            ensure_network(source.get("network"))
        if interface.get("type") == "direct" and source is not None:
            # a macvtap needs a lower device; the test bridge is one on every host
            source.set("dev", ensure_bridge())
        if interface.find("mac") is None:
            ET.SubElement(interface, "mac", {"address": f"52:54:00:c0:0f:{next(macs):02x}"})
            prepared.notes.append("fixed MAC added")
        script = interface.find("script")
        if script is not None:
            path = work / "ifup.sh"
            path.write_text("#!/bin/sh\nexit 0\n")
            path.chmod(0o755)
            script.set("path", str(path))

    # fw_cfg files: QEMU reads them at start, as libvirt-qemu under libvirt
    for sysinfo in root.findall("sysinfo"):
        if sysinfo.get("type") != "fwcfg":
            continue
        for entry in sysinfo.findall("entry"):
            if entry.get("file"):
                path = work / f"fwcfg{next(counter)}"
                path.write_text(json.dumps({"entry": entry.get("name")}) + "\n")
                path.chmod(0o644)
                entry.set("file", str(path))

    prepared.xml = ET.tostring(root, encoding="unicode")
    return prepared


TEST_BRIDGE = "vmshimconf0"


def ensure_bridge() -> str:
    """A host bridge for type='bridge' NICs, made once and removed at exit."""
    if not Path(f"/sys/class/net/{TEST_BRIDGE}").exists():
        subprocess.run(["ip", "link", "add", TEST_BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", TEST_BRIDGE, "up"], check=True)
        import atexit
        atexit.register(lambda: subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True))
    return TEST_BRIDGE


_created_networks: list[str] = []


def ensure_network(name: str) -> None:
    """A libvirt network for type='network' NICs, shared by both sides as on
    a real host: an existing one is started (Debian's 'default' needs
    dnsmasq), a missing one is created isolated (a bridge, no addresses) and
    destroyed at exit."""
    info = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "net-info", name], capture_output=True, text=True)
    if info.returncode == 0:
        if re.search(r"^Active:\s+no", info.stdout, re.M):
            subprocess.run(["virsh", "-q", "-c", "qemu:///system", "net-start", name], capture_output=True)
        return
    bridge = f"vmshimcn{len(_created_networks)}"
    definition = f"<network><name>{escape(name)}</name><bridge name='{bridge}'/></network>"
    path = Path(tempfile.mkstemp(suffix=".xml")[1])
    path.write_text(definition)
    created = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "net-create", str(path)], capture_output=True)
    path.unlink()
    if created.returncode == 0:
        if not _created_networks:
            import atexit
            atexit.register(lambda: [subprocess.run(["virsh", "-q", "-c", "qemu:///system", "net-destroy", n], capture_output=True)
                                     for n in _created_networks])
        _created_networks.append(name)


# ---------------------------------------------------------------- gathering

#: Machine properties that are host-side or name management objects.
PRIVATE_MACHINE_PROPERTIES = {
    "memory-backend", "kernel", "initrd", "append", "dtb", "dumpdtb", "firmware",
    "dump-guest-core", "mem-merge", "suppress-vmdesc", "phandle-start",
    "dt-compatible", "memory-encryption", "confidential-guest-support",
    "type", "memory-backend", "boot", "smp", "memory", "peripheral-anon",
    "pflash0", "pflash1",  # node names
}

#: qtree properties whose value names a management object (a drive, chardev,
#: netdev, iothread, memory backend, audio backend): only "set or not" counts.
PRIVATE_QTREE_PROPERTIES = {"drive", "chardev", "netdev", "iothread", "memdev", "audiodev", "rng"}


def gather(qmp, qemu_pid: int) -> dict:
    """What the guest can see, from QMP (and QEMU's argv for SMBIOS)."""
    facts: dict = {}
    facts["machine"] = qmp("qom-get", {"path": "/machine", "property": "type"})
    properties = {}
    for prop in qmp("qom-list", {"path": "/machine"}):
        name, kind = prop["name"], prop["type"]
        if name in PRIVATE_MACHINE_PROPERTIES or name.startswith("child<") or not (
            kind in ("bool", "int", "uint64", "uint32", "string", "OnOffAuto", "OnOffSplit", "size")
        ):
            continue
        try:
            properties[name] = qmp("qom-get", {"path": "/machine", "property": name})
        except QMPError:
            continue
    facts["machine properties"] = properties
    facts["uuid"] = qmp("query-uuid")["UUID"]
    facts["memory"] = qmp("query-memory-size-summary")
    facts["cpus"] = sorted(
        json.dumps({"type": c["type"], "props": c["props"], "plugged": "qom-path" in c}, sort_keys=True)
        for c in qmp("query-hotpluggable-cpus")
    )
    cpu_path = qmp("query-cpus-fast")[0]["qom-path"]
    facts["cpu model"] = qmp("qom-get", {"path": cpu_path, "property": "type"})
    facts["cpu feature words"] = qmp("qom-get", {"path": cpu_path, "property": "feature-words"})
    pci_buses = qmp("query-pci")
    facts["pci"] = _pci(pci_buses)
    facts["qtree"] = _qtree(qmp("human-monitor-command", {"command-line": "info qtree"}))
    facts["block"] = _block(qmp("query-block"))
    facts["numa"] = qmp("human-monitor-command", {"command-line": "info numa"}).splitlines()
    # DIMMs and virtio-mem: slot, guest-physical address, node and sizes
    facts["memory devices"] = [
        json.dumps({"type": d["type"], **{k: v for k, v in d["data"].items() if k not in ("id", "memdev")}},
                   sort_keys=True)
        for d in qmp("query-memory-devices")]
    facts["memory backends"] = sorted(
        json.dumps({k: v for k, v in m.items() if k != "id"}, sort_keys=True) for m in qmp("query-memdev"))
    try:
        balloon = qmp("query-balloon")
        facts["balloon actual"] = balloon["actual"]
    except QMPError:
        facts["balloon actual"] = None
    balloon_paths = [
        f"/machine/peripheral/{d['qdev_id']}"
        for bus in pci_buses for d in _flatten_pci(bus["devices"])
        if d.get("id", {}).get("device") in (0x1002, 0x1045) and d.get("qdev_id")
    ]
    facts["balloon stats period"] = [
        qmp("qom-get", {"path": p, "property": "guest-stats-polling-interval"}) for p in balloon_paths
    ]
    facts["argv"] = _argv_facts(qemu_pid)
    # not guest-visible, but what <vcpu cpuset> asks for
    status = Path(f"/proc/{qemu_pid}/status").read_text()
    facts["cpu affinity"] = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M).group(1)
    return facts


def _flatten_pci(devices: list) -> list:
    out = []
    for device in devices:
        out.append(device)
        bridge = device.get("pci_bridge")
        if bridge:
            out += _flatten_pci(bridge.get("devices", []))
    return out


def _pci(buses: list) -> list[str]:
    lines = []
    for bus in buses:
        for d in _flatten_pci(bus["devices"]):
            ident = d["id"]
            line = (
                f"{d['bus']:02x}:{d['slot']:02x}.{d['function']} "
                f"{ident['vendor']:04x}:{ident['device']:04x} "
                f"sub {ident.get('subsystem-vendor', 0):04x}:{ident.get('subsystem', 0):04x} "
                f"class {d['class_info']['class']:04x} irq {d.get('irq', '-')}"
            )
            bridge = d.get("pci_bridge")
            if bridge:
                b = bridge["bus"]
                line += f" bridge {b['number']}-{b['secondary']}-{b['subordinate']}"
            lines.append(line)
    return lines


def _qtree(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.rstrip()
        line = re.sub(r'^(\s*dev: [^,]+), id "[^"]*"', r"\1", line)
        match = re.match(r'^(\s*)([\w.-]+) = (.*)$', line)
        if match and match.group(2) in PRIVATE_QTREE_PROPERTIES:
            unset = match.group(3) in ('""', "<null>")
            line = f"{match.group(1)}{match.group(2)} = {'<none>' if unset else '<set>'}"
        out.append(line)
    return out


def _block(devices: list) -> list[str]:
    lines = []
    for device in devices:
        qdev = device.get("qdev", "")
        qdev = qdev.removeprefix("/machine/peripheral/").removesuffix("/virtio-backend")
        entry = {
            "qdev": qdev, "removable": device.get("removable"), "locked": device.get("locked"),
            "tray_open": device.get("tray_open"),
        }
        inserted = device.get("inserted")
        if inserted:
            chain, image = [], inserted.get("image")
            while image:
                chain.append({"format": image.get("format"), "virtual-size": image.get("virtual-size")})
                image = image.get("backing-image")
            entry["inserted"] = {
                "ro": inserted.get("ro"), "drv": inserted.get("drv"), "encrypted": inserted.get("encrypted"),
                "backing_file_depth": inserted.get("backing_file_depth"),
                "detect_zeroes": inserted.get("detect_zeroes"),
                "write_cache": inserted.get("cache", {}).get("writeback"),
                "chain": chain,
                # <iotune>, which libvirt sets over QMP after start
                "throttle": {k: v for k, v in inserted.items()
                             if (k.startswith(("bps", "iops")) or k == "group") and v not in (0, None)},
            }
        lines.append(json.dumps(entry, sort_keys=True))
    return sorted(lines)


def _argv_facts(pid: int) -> dict:
    """SMBIOS tables, fw_cfg entries, boot menu and RTC base reach the guest
    through firmware config built from argv; QMP cannot read them back. Neither can the
    Hyper-V enlightenments and paravirtual clocks on -cpu (CPUID leaves
    0x40000000 and up, outside the feature words)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    argv = [a.decode() for a in argv if a]
    facts: dict[str, list[str]] = {
        "-smbios": [], "-boot": [], "-rtc": [], "-global": [], "-watchdog-action": [], "-numa": [], "-cpu": [],
        "-fw_cfg": [],
    }
    for option, value in zip(argv, argv[1:]):
        if option in facts:
            facts[option].append(value)
    # vmshim and libvirt may spell the same -boot/-rtc/-global options in a different order
    # the NUMA distance matrix reaches the guest as ACPI SLIT; the node's backend name is ours
    facts["-numa"] = [re.sub(r",memdev=[^,]*", ",memdev=<set>", v) for v in facts["-numa"]]
    for key in ("-boot", "-rtc", "-global"):
        facts[key] = sorted(",".join(sorted(v.split(","))) for v in facts[key])
    # a fw_cfg file is each side's scratch copy: compare what the guest reads
    def fw_cfg_content(match: re.Match) -> str:
        digest = hashlib.sha256(Path(match.group(1)).read_bytes()).hexdigest()[:16]
        return f"file=<sha256 {digest}>"
    facts["-fw_cfg"] = [re.sub(r"file=([^,]+)", fw_cfg_content, v) for v in facts["-fw_cfg"]]
    # the model first, its options as a set
    facts["-cpu"] = [",".join(v.split(",")[:1] + sorted(v.split(",")[1:])) for v in facts["-cpu"]]
    # what backs guest RAM (anonymous, memfd, a hugetlbfs file): query-memdev does not say
    backends = []
    for option, value in zip(argv, argv[1:]):
        if option == "-object" and value.startswith("{") and "memory-backend" in value:
            backend = json.loads(value)
            backends.append(json.dumps({k: v for k, v in backend.items() if k not in ("id", "mem-path")}, sort_keys=True))
    facts["memory backend objects"] = sorted(backends)
    return facts


# ---------------------------------------------------------------- libvirt side


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*VIRSH, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise Refused((result.stderr or result.stdout).strip())
    return result


def _libvirt_cleanup(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--managed-save", "--nvram", check=False)


def under_libvirt(prepared: Prepared, work: Path) -> dict:
    path = work / "libvirt.xml"
    path.write_text(prepared.xml)
    _libvirt_cleanup(prepared.name)
    virsh("define", str(path))
    try:
        virsh("start", "--paused", prepared.name)
        pid = int(Path(f"/run/libvirt/qemu/{prepared.name}.pid").read_text().strip())

        def qmp(command: str, arguments: dict | None = None):
            request = {"execute": command}
            if arguments:
                request["arguments"] = arguments
            result = virsh("qemu-monitor-command", prepared.name, json.dumps(request), check=False)
            if result.returncode != 0:  # QMP's own errors come back in the reply
                raise RuntimeError(f"virsh qemu-monitor-command {command}: {result.stderr.strip()}")
            reply = json.loads(result.stdout)
            if "error" in reply:
                raise QMPError(reply["error"].get("desc", str(reply)))
            return reply["return"]

        return gather(qmp, pid)
    finally:
        _libvirt_cleanup(prepared.name)


# ---------------------------------------------------------------- vmshim side


def under_vmshim(prepared: Prepared, work: Path, vmshim: str) -> dict:
    path = work / "vmshim.xml"
    path.write_text(prepared.xml)
    # short: socket paths under it must fit in sun_path (107 bytes)
    root = Path(tempfile.mkdtemp(prefix="vc-", dir="/run"))
    status_file = root / prepared.name / "status.json"
    log = (work / "vmshim.log").open("w")
    process = subprocess.Popen(
        [vmshim, "run", "--run-root", str(root), "--registrar", "none", "--paused", str(path)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    status: dict | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                message = (work / "vmshim.log").read_text().strip()
                raise Refused(message or f"vmshim exited with {process.returncode}")
            try:
                status = json.loads(status_file.read_text())
                if status.get("state") == "paused" and status.get("qemu"):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vmshim did not reach 'paused' in 60 s; see {work / 'vmshim.log'}")
            time.sleep(0.05)

        def qmp(command: str, arguments: dict | None = None):
            request = {"execute": command}
            if arguments:
                request["arguments"] = arguments
            result = subprocess.run(
                [vmshim, "qmp", "--run-root", str(root), prepared.name, json.dumps(request)],
                capture_output=True, text=True, timeout=60,
            )
            try:
                reply = json.loads(result.stdout)
            except ValueError:
                raise RuntimeError(f"vmshim qmp {command}: {result.stderr.strip() or result.stdout.strip()}")
            if "error" in reply:
                raise QMPError(reply["error"].get("desc", str(reply)))
            return reply["return"] if "return" in reply else reply

        return gather(qmp, int(status["qemu"]["pid"]))
    finally:
        if process.poll() is None:
            try:
                subprocess.run([vmshim, "destroy", "--run-root", str(root), prepared.name],
                               capture_output=True, timeout=60)
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # QEMU has a session of its own: killing the shim's group leaves it
                qemu = (status or {}).get("qemu") or {}
                if qemu.get("pid"):
                    try:
                        os.kill(int(qemu["pid"]), 9)
                    except ProcessLookupError:
                        pass
                os.killpg(process.pid, 9)
                process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- comparison


def differences(theirs: dict, ours: dict) -> list[str]:
    out = []
    for key in theirs.keys() | ours.keys():
        a, b = theirs.get(key), ours.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            import difflib
            diff = [l for l in difflib.unified_diff(a, b, "libvirt", "vmshim", n=1, lineterm="")][2:]
            out.append(f"{key}:\n      " + "\n      ".join(diff))
        elif isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(a.keys() | b.keys()):
                if a.get(sub) != b.get(sub):
                    out.append(f"{key} {sub}: libvirt {a.get(sub)!r}, vmshim {b.get(sub)!r}")
        else:
            out.append(f"{key}: libvirt {a!r}, vmshim {b!r}")
    return sorted(out)


@dataclass
class Outcome:
    test: str
    kind: str  # identical | different | vmshim refuses | libvirt refuses | error
    detail: list[str]
    work: str = ""


def run_one(source: Path, vmshim: str, keep: bool) -> Outcome:
    test = source.stem
    work = Path(tempfile.mkdtemp(prefix=f"vmshim-conformance-{test}-"))
    os.chmod(work, 0o755)  # libvirt's QEMU runs as libvirt-qemu and must reach the images
    prepared: list[Prepared] = []
    try:
        # Each side gets its own images: libvirt leaves a shareable disk owned
        # by libvirt-qemu, which a capability-less root QEMU cannot open.
        sides = {}
        for side in ("libvirt", "vmshim"):
            (work / side).mkdir(mode=0o755)
            os.chmod(work / side, 0o755)
            sides[side] = prepare(source, work / side, test)
            prepared.append(sides[side])
        try:
            theirs = under_libvirt(sides["libvirt"], work / "libvirt")
        except Refused as error:
            return Outcome(test, "libvirt refuses", [str(error).splitlines()[-1]], str(work))
        try:
            ours = under_vmshim(sides["vmshim"], work / "vmshim", vmshim)
        except Refused as error:
            lines = [l for l in str(error).splitlines() if l.strip()]
            return Outcome(test, "vmshim refuses", lines[:6], str(work))
        if keep:
            (work / "libvirt.facts.json").write_text(json.dumps(theirs, indent=1, sort_keys=True))
            (work / "vmshim.facts.json").write_text(json.dumps(ours, indent=1, sort_keys=True))
        diff = differences(theirs, ours)
        return Outcome(test, "different" if diff else "identical", diff, str(work))
    except Exception as error:  # a harness failure is reported, not hidden
        return Outcome(test, "error", [f"{type(error).__name__}: {error}"], str(work))
    finally:
        for item in prepared:
            item.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vmshim", required=True, help="the vmshim binary")
    parser.add_argument("--corpus", type=Path, action="append",
                        help="a folder of domain XMLs (repeatable; default: libvirt's test corpus and real-tools/)")
    parser.add_argument("--only", action="append", default=[], help="run only these tests (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")
    args = parser.parse_args()
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: the finally blocks
    # destroy and undefine the domain in flight and remove scratch files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if os.geteuid() != 0:
        print("libvirt_conformance: run as root (qemu:///system)", file=sys.stderr)
        return 2
    if virsh("version", check=False).returncode != 0:
        print("libvirt_conformance: libvirtd is not reachable at qemu:///system; "
              "start it with 'virtlogd -d; libvirtd -d'", file=sys.stderr)
        return 2

    corpora = args.corpus or [DEFAULT_CORPUS, REAL_TOOLS_CORPUS]
    files = [f for corpus in corpora for f in sorted(corpus.glob("*.xml"))]
    if args.only:
        files = [f for f in files if f.stem in args.only]
    outcomes = []
    for source in files:
        started = time.monotonic()
        outcome = run_one(source, args.vmshim, args.keep)
        outcomes.append(outcome)
        print(f"{outcome.test}: {outcome.kind} ({time.monotonic() - started:.1f} s)"
              + (f" [{outcome.work}]" if args.keep else ""), flush=True)
        for line in outcome.detail:
            print(f"    {line}", flush=True)

    print()
    for corpus in corpora:
        mine = [o for o, f in zip(outcomes, files) if f.parent == corpus and o.kind != "libvirt refuses"]
        print(f"{corpus.name}: {sum(o.kind == 'identical' for o in mine)} of {len(mine)} identical")
    counted = [o for o in outcomes if o.kind != "libvirt refuses"]
    identical = [o for o in counted if o.kind == "identical"]
    refused = [o for o in counted if o.kind == "vmshim refuses"]
    different = [o for o in counted if o.kind == "different"]
    errors = [o for o in counted if o.kind == "error"]
    unnamed = [o for o in refused if not any("<" in line for line in o.detail)]
    print()
    print(f"{len(identical)} of {len(counted)} identical "
          f"({len(refused)} refused by vmshim, {len(different)} different, {len(errors)} errors; "
          f"{len(outcomes) - len(counted)} not accepted by libvirt 9.0 here)")
    for title, group in (("refused by vmshim", refused), ("different", different), ("errors", errors),
                         ("not accepted by libvirt", [o for o in outcomes if o.kind == "libvirt refuses"])):
        if group:
            print(f"{title}:")
            for o in group:
                print(f"  {o.test}: {o.detail[0] if o.detail else ''}")
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 1 if different or errors or unnamed else 0


if __name__ == "__main__":
    sys.exit(main())
