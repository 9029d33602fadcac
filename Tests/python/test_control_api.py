"""Drives vmshim's control API from Python with grpcio, to prove it is usable
outside Swift. Stubs are generated from proto/ at test time with grpc_tools.

Run by scripts/test.sh inside a venv that has grpcio and grpcio-tools:
    python -m unittest discover -s Tests/python -v
Needs the vmshim binary (VMSHIM_BINARY, default .build/debug/vmshim) and the
test guest (VMSHIM_TEST_GUEST, default /var/lib/vmshim/images/tiny).
"""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import grpc
from grpc_tools import protoc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("VMSHIM_BINARY", os.path.join(REPO, ".build", "debug", "vmshim"))
GUEST = os.environ.get("VMSHIM_TEST_GUEST", "/var/lib/vmshim/images/tiny")
MARKER = "VMSHIM-GUEST-READY"


def generate_stubs(out_dir, api="control"):
    """Python modules for proto/vmshim/<api>/v1/<api>.proto (control, registrar)."""
    os.makedirs(out_dir, exist_ok=True)
    proto_root = os.path.join(REPO, "proto")
    proto = os.path.join(proto_root, "vmshim", api, "v1", f"{api}.proto")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", proto])
    if rc != 0:
        raise RuntimeError(f"protoc failed for {proto}")
    # No __init__.py: as namespace packages, vmshim.control and
    # vmshim.registrar generated into different directories both import.
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    pb2 = importlib.import_module(f"vmshim.{api}.v1.{api}_pb2")
    pb2_grpc = importlib.import_module(f"vmshim.{api}.v1.{api}_pb2_grpc")
    return pb2, pb2_grpc


def run_as_nobody(script):
    """Runs a Python script as uid/gid 65534 with no supplementary groups."""
    def become_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    return subprocess.run([sys.executable, "-c", script], preexec_fn=become_nobody, capture_output=True, text=True,
                          timeout=60)


class ControlAPIFromPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(os.path.join(GUEST, "vmlinuz")):
            raise RuntimeError(f"test guest missing in {GUEST}: run scripts/build-test-guest.sh")
        cls.tmp = tempfile.mkdtemp(prefix="vmshim-py-")
        cls.pb2, cls.pb2_grpc = generate_stubs(os.path.join(cls.tmp, "stubs"))
        cls.name = "py-api"
        cls.run_root = os.path.join(cls.tmp, "run")
        cls.serial = os.path.join(cls.tmp, "serial.log")
        xml = os.path.join(cls.tmp, "guest.xml")
        with open(xml, "w") as f:
            f.write(f"""<domain type='qemu'>
  <name>{cls.name}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{GUEST}/vmlinuz</kernel>
    <initrd>{GUEST}/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <devices>
    <serial type='file'><source path='{cls.serial}'/><target port='0'/></serial>
  </devices>
</domain>
""")
        cls.log = open(os.path.join(cls.tmp, "shim.out"), "w")
        cls.shim = subprocess.Popen([BINARY, "run", "--run-root", cls.run_root, "--paused", xml],
                                    stdout=cls.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        cls.socket = os.path.join(cls.run_root, cls.name, "control.sock")
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(cls.run_root, cls.name, "status.json")) or not os.path.exists(cls.socket):
            if time.time() > deadline or cls.shim.poll() is not None:
                with open(cls.log.name) as f:
                    raise RuntimeError("vmshim did not come up: " + f.read())
            time.sleep(0.05)
        cls.channel = grpc.insecure_channel(f"unix://{cls.socket}")
        cls.stub = cls.pb2_grpc.ControlStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        if cls.shim.poll() is None:
            cls.shim.send_signal(signal.SIGKILL)
            cls.shim.wait()
        # QEMU survives a killed shim by design: find it by name and kill it.
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if f"guest={cls.name},debug-threads=on".encode() in argv:
                os.kill(int(pid), signal.SIGKILL)
        cls.channel.close()
        cls.log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def wait_state(self, state, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            current = self.stub.GetState(self.pb2.GetStateRequest()).state
            if current == state:
                return
            time.sleep(0.05)
        self.fail(f"state never became {self.pb2.State.Name(state)}")

    def serial_has_marker(self):
        if not os.path.exists(self.serial):
            return False
        with open(self.serial) as f:
            return MARKER in f.read()

    def test_1_info(self):
        self.wait_state(self.pb2.STATE_PAUSED)  # the QEMU version is known once QMP is up
        info = self.stub.Info(self.pb2.InfoRequest(), timeout=10)
        self.assertIn("vmshim.control.v1", info.api_versions)
        self.assertTrue(info.shim_version)
        self.assertTrue(info.qemu_version.startswith("7."), info.qemu_version)
        self.assertEqual(info.status_file_version, 1)

    def test_2_state_and_xml(self):
        self.wait_state(self.pb2.STATE_PAUSED)
        state = self.stub.GetState(self.pb2.GetStateRequest(include_xml=True), timeout=10)
        self.assertEqual(state.name, self.name)
        self.assertEqual(state.shim_pid, self.shim.pid)
        self.assertGreater(state.qemu_pid, 0)
        self.assertIn(f"<name>{self.name}</name>", state.live_xml)
        self.assertEqual(state.memory_kib, 128 * 1024)

    def test_3_qmp_passthrough(self):
        reply = self.stub.QMP(self.pb2.QMPRequest(command_json='{"execute":"query-status","id":"py-1"}'), timeout=10)
        self.assertFalse(reply.is_error)
        parsed = json.loads(reply.reply_json)
        self.assertEqual(parsed["id"], "py-1")
        self.assertIn(parsed["return"]["status"], ("prelaunch", "paused"))
        error = self.stub.QMP(self.pb2.QMPRequest(command_json='{"execute":"nope"}'), timeout=10)
        self.assertTrue(error.is_error)
        self.assertEqual(json.loads(error.reply_json)["error"]["class"], "CommandNotFound")

    def test_4_bad_requests_get_status_codes(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.QMP(self.pb2.QMPRequest(command_json="{not json"), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("JSON", caught.exception.details())
        # Resume is allowed while paused; Pause while paused is not.
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Pause(self.pb2.PauseRequest(), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)

    def test_4b_read_only_socket_serves_monitoring_only(self):
        run_dir = os.path.join(self.run_root, self.name)
        read_only = os.path.join(run_dir, "control-ro.sock")
        self.assertEqual(os.stat(self.socket).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(read_only).st_mode & 0o777, 0o666)
        self.assertEqual(os.stat(run_dir).st_mode & 0o777, 0o711)
        with grpc.insecure_channel(f"unix://{read_only}") as channel:
            stub = self.pb2_grpc.ControlStub(channel)
            self.assertEqual(stub.GetState(self.pb2.GetStateRequest()).name, self.name)
            reply = stub.QMP(self.pb2.QMPRequest(command_json='{"execute":"query-status"}'))
            self.assertIn('"status"', reply.reply_json)
            for call in (lambda: stub.Pause(self.pb2.PauseRequest()),
                         lambda: stub.QMP(self.pb2.QMPRequest(command_json='{"execute":"stop"}'))):
                with self.assertRaises(grpc.RpcError) as caught:
                    call()
                self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
                self.assertIn("read-only", caught.exception.details())

    def test_4c_peer_credentials_are_checked_whatever_the_file_mode(self):
        """Another user reaches control.sock only because its mode was opened
        up by hand: SO_PEERCRED still refuses it, with PERMISSION_DENIED; the
        read-only socket serves it."""
        read_only = os.path.join(self.run_root, self.name, "control-ro.sock")
        os.chmod(self.tmp, 0o755)
        os.chmod(self.socket, 0o666)
        script = f"""
import sys, grpc
sys.path.insert(0, {os.path.join(self.tmp, "stubs")!r})
from vmshim.control.v1 import control_pb2 as pb2, control_pb2_grpc as pb2_grpc
for path in ({self.socket!r}, {read_only!r}):
    with grpc.insecure_channel("unix://" + path) as channel:
        try:
            pb2_grpc.ControlStub(channel).GetState(pb2.GetStateRequest(), timeout=10)
            print("OK")
        except grpc.RpcError as error:
            print(error.code().name + " " + (error.details() or ""))
"""

        try:
            result = run_as_nobody(script)
        finally:
            os.chmod(self.socket, 0o600)
        lines = result.stdout.strip().splitlines()
        self.assertEqual(len(lines), 2, result.stdout + result.stderr)
        self.assertTrue(lines[0].startswith("PERMISSION_DENIED"), lines[0])
        self.assertIn("uid 65534", lines[0])
        self.assertEqual(lines[1], "OK")
        # Root still gets through the same socket.
        self.assertEqual(self.stub.GetState(self.pb2.GetStateRequest()).name, self.name)

    def test_5_events_while_resuming_and_pausing(self):
        events = []
        stream = self.stub.WatchEvents(self.pb2.WatchEventsRequest(include_qmp=True))

        def collect():
            try:
                for event in stream:
                    events.append(event)
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        time.sleep(0.3)
        resumed = self.stub.Resume(self.pb2.ResumeRequest(), timeout=30)
        self.assertEqual(resumed.state.state, self.pb2.STATE_RUNNING)
        deadline = time.time() + 60
        while not self.serial_has_marker():
            self.assertLess(time.time(), deadline, "guest never printed its marker")
            time.sleep(0.05)
        paused = self.stub.Pause(self.pb2.PauseRequest(), timeout=30)
        self.assertEqual(paused.state.state, self.pb2.STATE_PAUSED)
        deadline = time.time() + 10
        while time.time() < deadline and not any(e.WhichOneof("kind") == "qmp" and e.qmp.name == "STOP" for e in events):
            time.sleep(0.05)
        stream.cancel()
        names = [e.qmp.name for e in events if e.WhichOneof("kind") == "qmp"]
        states = [e.lifecycle.state for e in events if e.WhichOneof("kind") == "lifecycle"]
        self.assertIn("RESUME", names)
        self.assertIn("STOP", names)
        self.assertIn(self.pb2.STATE_RUNNING, states)
        self.assertIn(self.pb2.STATE_PAUSED, states)
        # The first message is the state at subscription (paused), stamped
        # with the sequence of the events before it; then strictly newer ones.
        self.assertEqual(events[0].WhichOneof("kind"), "lifecycle")
        self.assertEqual(events[0].lifecycle.state, self.pb2.STATE_PAUSED)
        self.assertGreater(events[0].sequence, 0)
        self.assertGreater(events[0].timestamp_unix_micros, int((time.time() - 600) * 1e6))
        sequences = [e.sequence for e in events]
        self.assertEqual(sequences, sorted(set(sequences)))

    def test_6_shutdown_ends_the_shim(self):
        self.stub.Resume(self.pb2.ResumeRequest(), timeout=30)
        done = self.stub.Shutdown(self.pb2.ShutdownRequest(timeout_seconds=30), timeout=60)
        self.assertEqual(done.state.state, self.pb2.STATE_SHUTOFF)
        self.assertEqual(self.shim.wait(timeout=30), 0)
        self.assertFalse(os.path.exists(os.path.join(self.run_root, self.name)))


if __name__ == "__main__":
    unittest.main()
