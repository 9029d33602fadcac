"""A Python grpcio client of vmshim-registrar, with real shims and real QEMU
(paused TCG guests): lists the domains, reads one and the host accounting,
watches an unreachable event after kill -9 of a shim, reads the Prometheus
endpoint, and checks the Register stream's refusals from a hand-written
client.

Run by scripts/test.sh (see test_control_api.py for the environment).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid

import grpc

from test_control_api import BINARY, GUEST, generate_stubs, run_as_nobody

REGISTRAR = os.environ.get("VMSHIM_REGISTRAR_BINARY", os.path.join(os.path.dirname(BINARY), "vmshim-registrar"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RegistrarFromPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(os.path.join(GUEST, "vmlinuz")):
            raise RuntimeError(f"test guest missing in {GUEST}: run scripts/build-test-guest.sh")
        cls.tmp = tempfile.mkdtemp(prefix="vmshim-pyreg-")
        cls.pb2, cls.pb2_grpc = generate_stubs(os.path.join(cls.tmp, "stubs"), "registrar")
        cls.run_root = os.path.join(cls.tmp, "run")
        os.makedirs(cls.run_root)
        cls.socket = os.path.join(cls.run_root, "registrar.sock")
        cls.port = free_port()
        cls.out = open(os.path.join(cls.tmp, "out.log"), "w")
        cls.registrar = subprocess.Popen(
            [REGISTRAR, "--socket", cls.socket, "--state-dir", os.path.join(cls.tmp, "state"),
             "--metrics-listen", f"127.0.0.1:{cls.port}"],
            stdout=cls.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        cls.shims = {}
        cls.uuids = {}
        deadline = time.monotonic() + 30
        while not os.path.exists(cls.socket):
            if time.monotonic() > deadline or cls.registrar.poll() is not None:
                raise RuntimeError("the registrar did not start: " + open(os.path.join(cls.tmp, "out.log")).read())
            time.sleep(0.02)
        for index in range(2):
            name = f"py-reg-{index}"
            cls.uuids[name] = str(uuid.uuid4())
            xml = os.path.join(cls.tmp, name + ".xml")
            with open(xml, "w") as f:
                f.write(f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{cls.uuids[name]}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{GUEST}/vmlinuz</kernel>
    <initrd>{GUEST}/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <devices><memballoon model='virtio'/></devices>
</domain>
""")
            cls.shims[name] = subprocess.Popen(
                [BINARY, "run", "--run-root", cls.run_root, "--registrar", cls.socket, "--paused", xml],
                stdout=cls.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        cls.channel = grpc.insecure_channel(f"unix:{cls.socket}")
        cls.stub = cls.pb2_grpc.RegistrarStub(cls.channel)
        cls.wait_for(lambda domains: sum(1 for d in domains if d.connected and d.status.state == cls.pb2.STATE_PAUSED
                                         and d.status.qemu_pid > 0) == 2, "two paused domains", timeout=120)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        for shim in cls.shims.values():
            if shim.poll() is None:
                shim.kill()
                shim.wait()
        for pid_dir in os.listdir(cls.run_root) if os.path.isdir(cls.run_root) else []:
            status = os.path.join(cls.run_root, pid_dir, "status.json")
            if os.path.exists(status):
                with open(status) as f:
                    qemu = json.load(f).get("qemu") or {}
                if qemu.get("pid"):
                    try:
                        os.kill(qemu["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if cls.registrar.poll() is None:
            cls.registrar.terminate()
            cls.registrar.wait(timeout=10)
        cls.out.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def wait_for(cls, condition, what, timeout=30):
        deadline = time.monotonic() + timeout
        domains = []
        while time.monotonic() < deadline:
            try:
                domains = cls.stub.ListDomains(cls.pb2.ListDomainsRequest(), timeout=5).domains
                if condition(domains):
                    return domains
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {domains}\n" +
                             open(os.path.join(cls.tmp, "out.log")).read()[-3000:])

    def test_1_info_and_listing(self):
        info = self.stub.Info(self.pb2.InfoRequest(), timeout=5)
        self.assertIn("vmshim.registrar.v1", info.api_versions)
        domains = self.stub.ListDomains(self.pb2.ListDomainsRequest(), timeout=5).domains
        self.assertEqual([d.identity.name for d in domains], ["py-reg-0", "py-reg-1"])
        for domain in domains:
            self.assertEqual(domain.identity.uuid, self.uuids[domain.identity.name])
            self.assertEqual(domain.identity.vcpus, 2)
            self.assertEqual(domain.identity.memory_kib, 128 * 1024)
            self.assertEqual(domain.source, "registered")
            self.assertEqual(domain.identity.shim_pid, self.shims[domain.identity.name].pid)
            self.assertTrue(os.path.exists(f"/proc/{domain.status.qemu_pid}"))
        only = self.stub.ListDomains(self.pb2.ListDomainsRequest(name_contains="-1", without_resources=True),
                                     timeout=5).domains
        self.assertEqual([d.identity.name for d in only], ["py-reg-1"])
        self.assertFalse(only[0].HasField("resources"))
        none = self.stub.ListDomains(self.pb2.ListDomainsRequest(states=[self.pb2.STATE_RUNNING]), timeout=5)
        self.assertEqual(len(none.domains), 0)

    def test_2_domain_accounting_and_figures(self):
        # Figures arrive with the state change that follows the start.
        domains = self.wait_for(lambda ds: all(d.resources.qemu_rss_kib > 0 for d in ds), "QEMU figures")
        domain = self.stub.GetDomain(self.pb2.GetDomainRequest(name="py-reg-0"), timeout=5)
        self.assertEqual(domain.identity.uuid, self.uuids["py-reg-0"])
        self.assertGreater(domain.resources.balloon_actual_kib, 0)
        self.assertGreater(domain.resources.shim_rss_kib, 0)
        with self.assertRaises(grpc.RpcError) as missing:
            self.stub.GetDomain(self.pb2.GetDomainRequest(name="nope"), timeout=5)
        self.assertEqual(missing.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("'nope'", missing.exception.details())
        host = self.stub.GetHostAccounting(self.pb2.GetHostAccountingRequest(), timeout=5)
        self.assertEqual(host.committed_vcpus, 4)
        self.assertEqual(host.committed_memory_kib, 2 * 128 * 1024)
        self.assertEqual(host.cpus, os.cpu_count())
        self.assertAlmostEqual(host.vcpu_overcommit, 4 / os.cpu_count())
        self.assertEqual(host.qemu_rss_kib, sum(d.resources.qemu_rss_kib for d in domains))

    def test_3_metrics_endpoint(self):
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        labels = f'name="py-reg-0",uuid="{self.uuids["py-reg-0"]}"'
        self.assertIn(f"vmshim_domain_vcpus{{{labels}}} 2\n", body)
        self.assertIn(f"vmshim_domain_memory_bytes{{{labels}}} {128 * 1024 * 1024}\n", body)
        self.assertIn("# TYPE vmshim_domain_cpu_seconds_total counter", body)
        self.assertIn("vmshim_host_committed_vcpus 4\n", body)
        with self.assertRaises(urllib.error.HTTPError) as other:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/other", timeout=5)
        self.assertEqual(other.exception.code, 404)

    def test_4_register_refusals(self):
        def once(*messages):
            return list(self.stub.Register(iter(messages), timeout=5))

        with self.assertRaises(grpc.RpcError) as first:
            once(self.pb2.ShimMessage(state=self.pb2.StateUpdate()))
        self.assertEqual(first.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("Snapshot", first.exception.details())
        held = self.pb2.Snapshot(epoch=1, identity=self.pb2.DomainIdentity(
            uuid=self.uuids["py-reg-0"], name="impostor", shim_pid=os.getpid()))
        with self.assertRaises(grpc.RpcError) as duplicate:
            once(self.pb2.ShimMessage(snapshot=held))
        self.assertEqual(duplicate.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
        self.assertIn("already registered by the live shim", duplicate.exception.details())

    def test_4b_who_may_use_which_socket(self):
        """Another user: the main socket, opened up by hand, still refuses it
        (SO_PEERCRED, PERMISSION_DENIED); the read-only socket lists domains
        for it but refuses Register, to root as well."""
        read_only = os.path.join(self.run_root, "registrar-ro.sock")
        self.assertEqual(os.stat(read_only).st_mode & 0o777, 0o666)
        self.assertEqual(os.stat(self.socket).st_mode & 0o777, 0o600)
        os.chmod(self.tmp, 0o755)
        os.chmod(self.run_root, 0o755)
        os.chmod(self.socket, 0o666)
        script = f"""
import sys, grpc
sys.path.insert(0, {os.path.join(self.tmp, "stubs")!r})
from vmshim.registrar.v1 import registrar_pb2 as pb2, registrar_pb2_grpc as pb2_grpc
for path in ({self.socket!r}, {read_only!r}):
    with grpc.insecure_channel("unix://" + path) as channel:
        try:
            print("OK %d" % len(pb2_grpc.RegistrarStub(channel).ListDomains(pb2.ListDomainsRequest(), timeout=10).domains))
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
        self.assertEqual(lines[1], "OK 2")
        with grpc.insecure_channel(f"unix:{read_only}") as channel:
            stub = self.pb2_grpc.RegistrarStub(channel)
            snapshot = self.pb2.Snapshot(epoch=1, identity=self.pb2.DomainIdentity(uuid=str(uuid.uuid4()), name="x"))
            with self.assertRaises(grpc.RpcError) as refused:
                list(stub.Register(iter([self.pb2.ShimMessage(snapshot=snapshot)]), timeout=5))
            self.assertEqual(refused.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
            self.assertIn("read-only", refused.exception.details())

    def test_5_kill_9_of_a_shim_is_an_unreachable_event(self):
        events = []
        stream = self.stub.WatchEvents(self.pb2.WatchEventsRequest())

        def collect():
            try:
                for event in stream:
                    events.append(event)
                    if event.kind == self.pb2.Event.KIND_UNREACHABLE:
                        return
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=collect)
        reader.start()
        time.sleep(0.3)
        victim = self.shims["py-reg-1"]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        reader.join(timeout=10)
        stream.cancel()
        unreachable = [e for e in events if e.kind == self.pb2.Event.KIND_UNREACHABLE]
        self.assertEqual([e.name for e in unreachable], ["py-reg-1"], events)
        domain = self.stub.GetDomain(self.pb2.GetDomainRequest(uuid=self.uuids["py-reg-1"]), timeout=5)
        self.assertEqual(domain.status.state, self.pb2.STATE_UNREACHABLE)
        self.assertFalse(domain.connected)
        self.assertTrue(os.path.exists(f"/proc/{domain.status.qemu_pid}"), "QEMU outlives its shim")


if __name__ == "__main__":
    unittest.main()
