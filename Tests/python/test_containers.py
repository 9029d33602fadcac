"""containers/: the Kubernetes manifests validate against the Kubernetes API
schemas (kubernetes-validate, offline), the domain XML they carry is one
vmshim accepts, and the image build script makes a context whose binary runs.

Needs the vmshim binary (VMSHIM_BINARY, default .build/debug/vmshim) and
kubernetes-validate (scripts/test.sh installs it into the test venv)."""

import glob
import os
import subprocess
import sys
import tempfile
import unittest

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("VMSHIM_BINARY", os.path.join(REPO, ".build", "debug", "vmshim"))
MANIFESTS = sorted(glob.glob(os.path.join(REPO, "containers", "k8s", "*.yaml")))


class Containers(unittest.TestCase):
    def test_1_manifests_validate_strictly(self):
        self.assertGreaterEqual(len(MANIFESTS), 2)
        tool = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
        result = subprocess.run([tool, "--strict", *MANIFESTS], capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        # And it does reject what the API would: a Pod without containers.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as bad:
            bad.write("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {restartPolicy: Sometimes}\n")
            bad.flush()
            rejected = subprocess.run([tool, "--strict", bad.name], capture_output=True, text=True, timeout=120)
            self.assertNotEqual(rejected.returncode, 0, rejected.stdout)

    def test_2_the_configmaps_domain_is_valid_for_vmshim(self):
        documents = []
        for path in MANIFESTS:
            with open(path) as f:
                documents += [d for d in yaml.safe_load_all(f) if d]
        maps = [d for d in documents if d["kind"] == "ConfigMap"]
        self.assertTrue(maps)
        for config in maps:
            with tempfile.NamedTemporaryFile("w", suffix=".xml") as xml:
                xml.write(config["data"]["domain.xml"])
                xml.flush()
                result = subprocess.run([BINARY, "validate", xml.name], capture_output=True, text=True, timeout=60)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        # Every pod mounts the ConfigMap where its args point, and the node's run directory.
        for pod in (d for d in documents if d["kind"] == "Pod"):
            container = pod["spec"]["containers"][0]
            self.assertIn("/etc/vmshim/domain.xml", container["args"])
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            self.assertIn("/etc/vmshim", mounts)
            self.assertIn("/run/vmshim", mounts)
            timeout = float(container["args"][container["args"].index("--shutdown-timeout") + 1])
            self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], timeout,
                               "the grace period must leave room for the guest's shutdown")
        # The node's registrar serves the socket a pod's shim looks for by
        # default (<run root>/registrar.sock), on the shared hostPath.
        daemonsets = [d for d in documents if d["kind"] == "DaemonSet"]
        self.assertEqual(len(daemonsets), 1)
        spec = daemonsets[0]["spec"]["template"]["spec"]
        registrar = spec["containers"][0]
        socket_path = registrar["args"][registrar["args"].index("--socket") + 1]
        self.assertEqual(socket_path, "/run/vmshim/registrar.sock")
        run_volume = next(m["name"] for m in registrar["volumeMounts"] if m["mountPath"] == "/run/vmshim")
        self.assertEqual(next(v for v in spec["volumes"] if v["name"] == run_volume)["hostPath"]["path"], "/run/vmshim")
        self.assertTrue(spec.get("hostPID"), "the registrar checks QEMU pids in the node's pid namespace")

    def test_3_the_image_context_holds_a_binary_that_runs(self):
        with tempfile.TemporaryDirectory() as out:
            result = subprocess.run([os.path.join(REPO, "containers", "build-images.sh"), "--vmshim", BINARY,
                                     "--out", out, "--context-only"], capture_output=True, text=True, timeout=600)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            context = os.path.join(out, "vmshim")
            self.assertTrue(os.path.exists(os.path.join(context, "Containerfile")))
            for image, binary in (("vmshim", "vmshim"), ("registrar", "vmshim-registrar")):
                context = os.path.join(out, image)
                self.assertTrue(os.path.exists(os.path.join(context, "Containerfile")), image)
                version = subprocess.run([os.path.join(context, binary), "--version"], capture_output=True, text=True)
                self.assertEqual(version.returncode, 0, image)
                self.assertRegex(version.stdout.strip(), r"^\d+\.\d+\.\d+$")


if __name__ == "__main__":
    unittest.main()
