"""Shared helpers for the vmshim benchmarks (Python 3 standard library only).

Everything a benchmark starts is registered with a Janitor, which stops it
again on normal exit, on an exception and on SIGINT/SIGTERM/SIGHUP: vmshim
guests are destroyed with `vmshim destroy` (falling back to killing the shim
and its QEMU), bare QEMUs are quit over QMP (falling back to SIGKILL) and
libvirt domains are destroyed (and undefined when they were defined).
Children are started in their own session, so a Ctrl-C in the terminal only
reaches the benchmark, which then cleans up in order.
"""

import datetime
import grp
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
DEFAULT_TEMPLATE = os.path.join(REPO, "examples", "tiny.xml")
MARKER = b"VMSHIM-GUEST-READY"
LIBVIRT_URI = "qemu:///system"
MIB = 1024 * 1024


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Small utilities


def now_ns():
    return time.monotonic_ns()


def ms(ns):
    return ns / 1e6


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def default_vmshim():
    release = os.path.join(REPO, ".build", "release", "vmshim")
    debug = os.path.join(REPO, ".build", "debug", "vmshim")
    return release if os.path.exists(release) else debug


def build_kind(path):
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for kind in ("release", "debug"):
        if kind in parts:
            return kind
    return "unknown"


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * p / 100.0
    lo = int(rank)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def summarize(values):
    if not values:
        return None
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def command_output(argv, timeout=10):
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unavailable ({error})"


def host_info(vmshim, qemu="/usr/bin/qemu-system-x86_64"):
    git = command_output(["git", "-C", REPO, "rev-parse", "HEAD"])
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "python": platform.python_version(),
        "qemu": command_output([qemu, "--version"]).splitlines()[0] if os.path.exists(qemu) else None,
        "libvirt": command_output(["virsh", "--version"]) if shutil.which("virsh") else None,
        "kvm": os.path.exists("/dev/kvm"),
        "vmshim": {
            "path": os.path.realpath(vmshim),
            "build": build_kind(vmshim),
            "version": command_output([vmshim, "--version"]),
            "mtime": datetime.datetime.fromtimestamp(os.path.getmtime(vmshim), datetime.timezone.utc).isoformat(),
        },
        "git": {"commit": git, "dirty": bool(dirty)},
    }


def write_results(benchmarks, info, argv):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(RESULTS_DIR, f"{stamp}.json")
    suffix = 1
    while os.path.exists(path):
        path = os.path.join(RESULTS_DIR, f"{stamp}-{suffix}.json")
        suffix += 1
    document = {"timestamp": stamp, "command": argv, "host": info, "benchmarks": benchmarks}
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
    return path


def smaps_rollup(pid):
    """/proc/PID/smaps_rollup as {field: kB}."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def private_mib(fields):
    return (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024.0


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    return dict(item.split("=", 1) for item in items if "=" in item)


def pids_named(comm):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == comm:
                    found.append(int(entry))
        except OSError:
            pass
    return found


def pids_with_token(token):
    """Processes whose command line mentions token (our unique name prefix)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if any(token in arg for arg in proc_cmdline(int(entry))):
            found.append(int(entry))
    return found


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_if_ours(pid, token, sig=signal.SIGKILL):
    """Signal pid only if its command line still mentions token."""
    if pid and any(token in arg for arg in proc_cmdline(pid)):
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            pass
    return False


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids if p):
            return True
        time.sleep(0.01)
    return not any(pid_alive(p) for p in pids if p)


# --------------------------------------------------------------------------
# Guest XML


def make_guest_xml(template, name, uuid, serial_path, memory_mib=None, cmdline_extra=None, serial_append=False):
    """A copy of the template with a new name/uuid, a file serial and console
    (both on serial_path), optionally a different memory size and more
    kernel command-line words."""
    root = ET.parse(template).getroot()
    if cmdline_extra:
        cmdline = root.find("os/cmdline")
        if cmdline is None:
            raise BenchError(f"{template} has no <os><cmdline> to add '{cmdline_extra}' to")
        cmdline.text = f"{cmdline.text or ''} {cmdline_extra}".strip()
    root.find("name").text = name
    uuid_el = root.find("uuid")
    if uuid_el is None:
        uuid_el = ET.SubElement(root, "uuid")
    uuid_el.text = uuid
    if memory_mib is not None:
        for tag in ("memory", "currentMemory"):
            el = root.find(tag)
            if el is not None:
                el.set("unit", "MiB")
                el.text = str(memory_mib)
    devices = root.find("devices")
    position = None
    for index, el in enumerate(list(devices)):
        if el.tag in ("serial", "console") and position is None:
            position = index
    for el in list(devices):
        if el.tag in ("serial", "console"):
            devices.remove(el)
    serial = ET.Element("serial", {"type": "file"})
    ET.SubElement(serial, "source", {"path": serial_path, **({"append": "on"} if serial_append else {})})
    ET.SubElement(serial, "target", {"port": "0"})
    console = ET.Element("console", {"type": "file"})
    ET.SubElement(console, "source", {"path": serial_path, **({"append": "on"} if serial_append else {})})
    ET.SubElement(console, "target", {"type": "serial", "port": "0"})
    if position is None:
        position = len(devices)
    devices.insert(position, serial)
    devices.insert(position + 1, console)
    return ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------
# Pollable conditions. poll(t) returns True once satisfied and records the
# monotonic time at which it was first seen in .t_ns.


class Watch:
    label = "condition"

    def __init__(self):
        self.t_ns = None

    @property
    def done(self):
        return self.t_ns is not None

    def poll(self, t):
        raise NotImplementedError


class MarkerWatch(Watch):
    """A marker appears in a file that is appended to (a serial log)."""

    def __init__(self, path, marker=MARKER):
        super().__init__()
        self.path = path
        self.marker = marker
        self.offset = 0
        self.tail = b""
        self.label = f"{marker.decode()} in {path}"

    def poll(self, t):
        if self.done:
            return True
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        if size < self.offset:  # truncated and rewritten
            self.offset, self.tail = 0, b""
        if size == self.offset:
            return False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        data = self.tail + chunk
        if self.marker in data:
            self.t_ns = now_ns()
            return True
        self.tail = data[-len(self.marker):]
        return False


class StatusWatch(Watch):
    """vmshim's status.json reaches a state (the file is replaced by rename)."""

    def __init__(self, path, state="running"):
        super().__init__()
        self.path = path
        self.state = state
        self.seen = None
        self.last = None
        self.label = f"state {state} in {path}"

    def poll(self, t):
        if self.done:
            return True
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self.seen:
            return False
        try:
            with open(self.path, "rb") as f:
                status = json.loads(f.read())
        except (OSError, ValueError):
            return False
        self.seen = key
        self.last = status
        if status.get("state") == self.state:
            self.t_ns = now_ns()
            return True
        return False


class ExitWatch(Watch):
    """A child exits with status 0 (virsh create returning)."""

    def __init__(self, proc, what, output_path=None):
        super().__init__()
        self.proc = proc
        self.what = what
        self.output_path = output_path
        self.label = f"{what} to return"

    def poll(self, t):
        if self.done:
            return True
        rc = self.proc.poll()
        if rc is None:
            return False
        if rc != 0:
            output = ""
            if self.output_path and os.path.exists(self.output_path):
                output = open(self.output_path, errors="replace").read().strip()
            raise BenchError(f"{self.what} failed with exit status {rc}: {output}")
        self.t_ns = now_ns()
        return True


def poll_until(watches, timeout_s, poll_s=0.001, alive=()):
    """Poll every poll_s until all watches are done. alive: (Popen, what,
    output path) that must not exit meanwhile."""
    deadline = now_ns() + int(timeout_s * 1e9)
    while True:
        t = now_ns()
        if all([w.poll(t) for w in watches]):
            return
        for proc, what, output_path in alive:
            if proc.poll() is not None:
                output = ""
                if output_path and os.path.exists(output_path):
                    output = open(output_path, errors="replace").read().strip()[-2000:]
                raise BenchError(f"{what} exited early (status {proc.returncode}): {output}")
        if t > deadline:
            pending = ", ".join(w.label for w in watches if not w.done)
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {pending}")
        time.sleep(poll_s)


# --------------------------------------------------------------------------
# QMP


class QMPClient:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    @classmethod
    def connect(cls, path, proc, timeout_s, poll_s):
        """Connect to a QEMU-created listening socket, retrying until it exists."""
        deadline = time.monotonic() + timeout_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                sock.settimeout(timeout_s)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            if proc.poll() is not None:
                raise BenchError(f"QEMU exited with status {proc.returncode} before its QMP socket was up")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out connecting to {path}")
            time.sleep(poll_s)

    def read_message(self):
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("QMP connection closed")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command, arguments=None):
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self.read_message()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise BenchError(f"QMP {command} failed: {reply['error']}")
            # an event: skip

    def handshake(self):
        greeting = self.read_message()
        if "QMP" not in greeting:
            raise BenchError(f"unexpected QMP greeting {greeting}")
        self.execute("qmp_capabilities")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# Bare QEMU command line, derived from what vmshim actually ran


def _split_options(text):
    """QEMU option string -> list of 'key=value' items (',,' escapes a comma)."""
    items, current, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                current += ",,"
                i += 2
                continue
            items.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    items.append(current)
    return items


class BareTemplate:
    """QEMU's argv and environment as vmshim launched it, with the vmshim-
    specific pieces made placeholders: the QMP chardev's pre-bound fd=N
    becomes path={QMP} (QEMU binds it itself), -add-fd/fdset file uses become
    plain path= uses, and the name, uuid, run directory and serial path
    become {NAME}, {UUID}, {RUNDIR}, {SERIAL}."""

    def __init__(self, argv, env, source):
        self.argv = argv
        self.env = env
        self.source = source

    @classmethod
    def from_vmshim_guest(cls, guest, vmshim, run_root):
        status = guest.status()
        qemu_pid = status["qemu"]["pid"]
        argv = proc_cmdline(qemu_pid)
        env = proc_environ(qemu_pid)
        if not argv:
            raise BenchError(f"cannot read the command line of QEMU pid {qemu_pid}")
        # Which file each fd set holds: ask QEMU (through the shim), then
        # resolve the fds in /proc; fall back to the XML (one serial file).
        fdset_paths = {}
        reply = subprocess.run(
            [vmshim, "qmp", guest.name, '{"execute":"query-fdsets"}'],
            env=dict(os.environ, VMSHIM_RUN_ROOT=run_root), capture_output=True, text=True, timeout=30)
        if reply.returncode == 0:
            try:
                parsed = json.loads(reply.stdout)
                for fdset in parsed.get("return", parsed if isinstance(parsed, list) else []):
                    for fd in fdset.get("fds", []):
                        try:
                            fdset_paths[fdset["fdset-id"]] = os.readlink(f"/proc/{qemu_pid}/fd/{fd['fd']}")
                            break
                        except OSError:
                            pass
            except ValueError:
                pass
        placeholders = [
            (guest.run_dir, "{RUNDIR}"),
            (guest.serial, "{SERIAL}"),
            (guest.uuid, "{UUID}"),
            (guest.name, "{NAME}"),
        ]

        def generic(text):
            for value, token in placeholders:
                text = text.replace(value, token)
            return text

        out = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "-add-fd" and i + 1 < len(argv):
                opts = dict(item.split("=", 1) for item in _split_options(argv[i + 1]) if "=" in item)
                fdset = int(opts.get("set", "-1"))
                if fdset not in fdset_paths and opts.get("opaque", "").startswith("serial0-"):
                    fdset_paths[fdset] = guest.serial
                if fdset not in fdset_paths:
                    raise BenchError(f"cannot tell which file fd set {fdset} ({argv[i + 1]}) holds")
                i += 2
                continue
            if arg == "-chardev" and i + 1 < len(argv) and "id=charmonitor" in _split_options(argv[i + 1]):
                items = ["path={QMP}" if item.startswith("fd=") else item for item in _split_options(argv[i + 1])]
                out += [arg, ",".join(items)]
                i += 2
                continue
            out.append(arg)
            i += 1

        result = []
        for arg in out:
            for fdset, path in fdset_paths.items():
                arg = arg.replace(f"/dev/fdset/{fdset}", path)
            result.append(generic(arg))
        for arg in result:
            if "/dev/fdset/" in arg or any(item.startswith("fd=") for item in _split_options(arg)):
                raise BenchError(f"vmshim's QEMU argv passes an fd the bare-QEMU run cannot replace: {arg}")
        env = {k: generic(v) for k, v in env.items()}
        return cls(result, env, {"qemuPid": qemu_pid, "argv": argv})

    def instantiate(self, name, uuid, run_dir, serial, qmp):
        values = {"{RUNDIR}": run_dir, "{SERIAL}": serial, "{UUID}": uuid, "{NAME}": name, "{QMP}": qmp}

        def fill(text):
            for token, value in values.items():
                text = text.replace(token, value)
            return text

        return [fill(a) for a in self.argv], {k: fill(v) for k, v in self.env.items()}


# --------------------------------------------------------------------------
# The three ways to run a guest


class VmshimGuest:
    kind = "vmshim"

    def __init__(self, ctx, name, xml_path, serial):
        self.ctx = ctx
        self.name = name
        self.xml_path = xml_path
        self.serial = serial
        self.uuid = ET.parse(xml_path).getroot().findtext("uuid")
        self.run_dir = os.path.join(ctx.run_root, name)
        self.status_path = os.path.join(self.run_dir, "status.json")
        self.out_path = os.path.join(ctx.tmp, f"{name}.shim.out")
        self.proc = None
        self.qemu_pid = None
        self.t0 = None

    def start(self):
        env = dict(os.environ, VMSHIM_RUN_ROOT=self.ctx.run_root)
        out = open(self.out_path, "wb")
        self.ctx.janitor.add(self)
        try:
            self.t0 = now_ns()
            self.proc = subprocess.Popen(
                [self.ctx.vmshim, "run", self.xml_path], env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        return self

    def alive_check(self):
        return (self.proc, f"vmshim ({self.name})", self.out_path)

    def status(self):
        with open(self.status_path) as f:
            status = json.load(f)
        if status.get("qemu"):
            self.qemu_pid = status["qemu"]["pid"]
        return status

    def stop(self, timeout=20):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                if self.qemu_pid is None and os.path.exists(self.status_path):
                    self.status()
            except (OSError, ValueError, KeyError, TypeError):
                pass
            subprocess.run(
                [self.ctx.vmshim, "destroy", self.name], env=dict(os.environ, VMSHIM_RUN_ROOT=self.ctx.run_root),
                stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"warning: vmshim {self.name} did not exit after destroy; killing it")
                self.proc.kill()
                self.proc.wait()
        if self.qemu_pid and not wait_gone([self.qemu_pid], 5):
            log(f"warning: QEMU {self.qemu_pid} of {self.name} outlived its shim; killing it")
            kill_if_ours(self.qemu_pid, self.name)
            wait_gone([self.qemu_pid], 5)
        self.proc = None


class BareGuest:
    kind = "bare"

    def __init__(self, ctx, template, name, uuid, serial):
        self.ctx = ctx
        self.name = name
        self.serial = serial
        self.run_dir = os.path.join(ctx.tmp, "bare", name)
        os.makedirs(self.run_dir, exist_ok=True)
        self.qmp_path = os.path.join(self.run_dir, "qmp.sock")
        self.out_path = os.path.join(self.run_dir, "qemu.log")
        self.argv, self.env = template.instantiate(name, uuid, self.run_dir, serial, self.qmp_path)
        self.proc = None
        self.qmp = None
        self.t0 = None
        self.t_running = None

    @property
    def qemu_pid(self):
        return self.proc.pid if self.proc else None

    def start(self, poll_s, timeout_s):
        """exec QEMU -S, connect to QMP, qmp_capabilities, cont; returns when
        the cont reply has arrived (what a minimal manager does)."""
        out = open(self.out_path, "wb")
        self.ctx.janitor.add(self)
        try:
            self.t0 = now_ns()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            out.close()
        try:
            self.qmp = QMPClient.connect(self.qmp_path, self.proc, timeout_s, poll_s)
            self.qmp.handshake()
            self.qmp.execute("cont")
        except BenchError as error:
            output = open(self.out_path, errors="replace").read().strip()[-2000:]
            raise BenchError(f"bare QEMU {self.name}: {error}\n{output}") from None
        self.t_running = now_ns()
        return self

    def alive_check(self):
        return (self.proc, f"bare QEMU ({self.name})", self.out_path)

    def stop(self, timeout=10):
        if self.proc is None:
            return
        if self.proc.poll() is None and self.qmp is not None:
            try:
                self.qmp.sock.settimeout(2)
                self.qmp.execute("quit")
            except (OSError, BenchError, ValueError):
                pass
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class LibvirtGuest:
    kind = "libvirt"

    def __init__(self, ctx, name, xml_path, serial):
        self.ctx = ctx
        self.name = name
        self.xml_path = xml_path
        self.serial = serial
        self.out_path = os.path.join(ctx.tmp, f"{name}.virsh.out")
        self.proc = None
        self.defined = False
        self.started = False
        self.t0 = None

    def virsh(self, *args, timeout=60, check=True):
        result = subprocess.run(
            ["virsh", "-q", "-c", LIBVIRT_URI, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout)
        if check and result.returncode != 0:
            raise BenchError(f"virsh {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def start_create(self):
        """virsh create (transient); poll ExitWatch(self.proc) for its return."""
        out = open(self.out_path, "wb")
        self.ctx.janitor.add(self)
        self.started = True
        try:
            self.t0 = now_ns()
            self.proc = subprocess.Popen(
                ["virsh", "-q", "-c", LIBVIRT_URI, "create", self.xml_path], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        return self

    def define_and_start(self):
        self.ctx.janitor.add(self)
        self.defined = True
        self.virsh("define", self.xml_path)
        self.started = True
        self.virsh("start", self.name)
        return self

    def stop(self, timeout=60):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.started:
            self.virsh("destroy", self.name, check=False, timeout=timeout)
            self.started = False
        if self.defined:
            # --managed-save: a save benchmark interrupted mid-cycle leaves an image.
            self.virsh("undefine", "--managed-save", self.name, check=False, timeout=timeout)
            self.defined = False


def libvirt_reachable():
    if not shutil.which("virsh"):
        return False, "virsh is not installed"
    result = subprocess.run(["virsh", "-c", LIBVIRT_URI, "list"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0:
        return False, (result.stderr or result.stdout).strip()
    give_kvm_to_its_group()
    return True, ""


def give_kvm_to_its_group():
    """Sets /dev/kvm to root:kvm 0660, as Debian's udev rule does, when a host
    without udev left it root-only. libvirt probes QEMU's capabilities as root
    (KVM usable) but checks the cache as libvirt-qemu (KVM not usable), finds
    the cache outdated and re-probes on every domain start: ~48 s per start,
    which would measure a broken host, not libvirt. The guests stay TCG."""
    try:
        st = os.stat("/dev/kvm")
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return
    if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
        return
    try:
        os.chown("/dev/kvm", 0, kvm_gid)
        os.chmod("/dev/kvm", 0o660)
        print("bench: /dev/kvm was root-only; set it to root:kvm 0660 as udev would, "
              "so libvirt does not re-probe QEMU on every start", file=sys.stderr)
    except OSError as error:
        print(f"bench: warning: /dev/kvm is root-only and cannot be changed ({error}); "
              "libvirt will re-probe QEMU on every start and look far slower than it is", file=sys.stderr)


LIBVIRT_HINT = "start the daemons with 'virtlogd -d; libvirtd -d' (as root)"


# --------------------------------------------------------------------------
# Context and cleanup


class Janitor:
    def __init__(self, token, vmshim, run_root):
        self.token = token
        self.vmshim = vmshim
        self.run_root = run_root
        self.items = []

    def add(self, item):
        if item not in self.items:
            self.items.append(item)

    def forget(self, item):
        if item in self.items:
            self.items.remove(item)

    def cleanup(self):
        for item in reversed(self.items):
            try:
                item.stop()
            except Exception as error:  # keep going: everything else must still go
                log(f"warning: stopping {item.kind} guest {item.name} failed: {error}")
        self.items = []
        # Belt and braces: anything still carrying our unique name prefix.
        if shutil.which("virsh"):
            try:
                for state_flag in ("--all",):
                    names = subprocess.run(
                        ["virsh", "-q", "-c", LIBVIRT_URI, "list", state_flag, "--name"], capture_output=True,
                        text=True, timeout=30).stdout.split()
                    for name in names:
                        if name.startswith(self.token):
                            log(f"warning: removing leftover libvirt domain {name}")
                            subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "destroy", name], capture_output=True,
                                           timeout=60)
                            subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "undefine", name], capture_output=True,
                                           timeout=60)
            except (OSError, subprocess.SubprocessError):
                pass
        leftovers = pids_with_token(self.token)
        for pid in leftovers:
            log(f"warning: killing leftover process {pid}: {' '.join(proc_cmdline(pid))[:120]}")
            kill_if_ours(pid, self.token)
        if leftovers:
            wait_gone(leftovers, 5)
        return leftovers


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class Context:
    """A scratch directory, a unique name prefix and a Janitor. Use as a
    context manager; everything is cleaned up on the way out."""

    def __init__(self, vmshim, template, keep_tmp=False):
        self.vmshim = os.path.abspath(vmshim)
        self.template = os.path.abspath(template)
        self.keep_tmp = keep_tmp
        self.token = "vsb" + str(os.getpid()) + "".join(random.choice(string.ascii_lowercase) for _ in range(3))
        self.tmp = tempfile.mkdtemp(prefix="vmshimbench-", dir="/tmp")
        os.chmod(self.tmp, 0o755)
        self.run_root = os.path.join(self.tmp, "root")
        self.serial_dir = os.path.join(self.tmp, "serial")
        self.xml_dir = os.path.join(self.tmp, "xml")
        for path in (self.run_root, self.serial_dir, self.xml_dir):
            os.makedirs(path)
        # libvirt opens the serial file itself and may chown it to its qemu user.
        os.chmod(self.serial_dir, 0o777)
        os.chmod(self.xml_dir, 0o755)
        self.janitor = Janitor(self.token, self.vmshim, self.run_root)
        self.counter = 0
        self._old_handlers = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, exc_type, exc, tb):
        # A second Ctrl-C (or SIGTERM) must not abort the cleanup half-way.
        for sig in self._old_handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            if exc_type is KeyboardInterrupt:
                log("interrupted: cleaning up…")
            leftovers = self.janitor.cleanup()
            if not self.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                log(f"kept {self.tmp}")
            self.leftovers = leftovers
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
        return False

    def new_guest_files(self, tag, memory_mib=None, cmdline_extra=None, serial_append=False):
        """(name, uuid, xml path, serial path) for a fresh guest."""
        self.counter += 1
        name = f"{self.token}-{tag}{self.counter}"
        uuid = str(uuidlib.uuid4())
        serial = os.path.join(self.serial_dir, f"{name}.log")
        xml_path = os.path.join(self.xml_dir, f"{name}.xml")
        with open(xml_path, "w") as f:
            f.write(make_guest_xml(self.template, name, uuid, serial, memory_mib, cmdline_extra, serial_append))
        os.chmod(xml_path, 0o644)
        return name, uuid, xml_path, serial


def check_prerequisites(vmshim, template):
    if not os.access(vmshim, os.X_OK):
        raise BenchError(f"no vmshim binary at {vmshim} (build it, or pass --vmshim PATH)")
    if not os.path.exists(template):
        raise BenchError(f"no guest template at {template}")
    root = ET.parse(template).getroot()
    for tag in ("kernel", "initrd"):
        path = root.findtext(f"os/{tag}")
        if path and not os.path.exists(path):
            raise BenchError(f"{path} is missing: run scripts/build-test-guest.sh")
    if os.geteuid() != 0:
        log("warning: not running as root; reading other users' /proc/PID/smaps_rollup and libvirt may fail")


def add_common_arguments(parser):
    parser.add_argument("--vmshim", default=default_vmshim(),
                        help="vmshim binary (default: .build/release/vmshim if it exists, else .build/debug/vmshim)")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="guest XML to derive the test guests from")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="polling interval in ms (default 1)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for any one guest to come up (default 120)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the scratch directory under /tmp")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/<timestamp>.json")


def standalone_main(name, doc, add_arguments, run, print_summary, argv=None):
    """main() of one benchmark run on its own: parse, run in a Context,
    print, write bench/results/<timestamp>.json under `name`."""
    import argparse
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_prerequisites(args.vmshim, args.template)
        info = host_info(args.vmshim)
        with Context(args.vmshim, args.template, args.keep_tmp) as ctx:
            result = run(args, ctx)
        print_summary(result, info)
        if not args.no_json:
            path = write_results({name: result}, info, sys.argv)
            print(f"\nresults: {os.path.relpath(path)}")
    except BenchError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
