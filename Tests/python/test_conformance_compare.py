"""The conformance suite's own logic: what it normalises away, what it still
reports as a difference, and how it prepares an input (no libvirt needed)."""

import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))
import libvirt_conformance as conformance  # noqa: E402


class Normalisation(unittest.TestCase):
    def test_qtree_drops_ids_and_management_names_but_keeps_guest_properties(self):
        text = "\n".join([
            '      dev: virtio-blk-pci, id "virtio-disk0"',
            '        drive = "libvirt-1-format"',
            '        serial = "ABC"',
            '        bootindex = 1 (0x1)',
            '        chardev = ""',
        ])
        self.assertEqual(conformance._qtree(text), [
            "      dev: virtio-blk-pci",
            "        drive = <set>",
            '        serial = "ABC"',
            "        bootindex = 1 (0x1)",
            "        chardev = <none>",
        ])

    def test_a_guest_visible_change_is_a_difference(self):
        theirs = {"pci": ["00:02.0 1af4:1000"], "machine": "pc-i440fx-7.2-machine", "memory": {"base-memory": 1}}
        ours = {"pci": ["00:03.0 1af4:1000"], "machine": "pc-i440fx-7.2-machine", "memory": {"base-memory": 2}}
        found = conformance.differences(theirs, ours)
        self.assertEqual(len(found), 2, found)
        self.assertIn("-00:02.0 1af4:1000", found[1] + found[0])
        self.assertIn("memory base-memory: libvirt 1, vmshim 2", found)
        self.assertEqual(conformance.differences(theirs, dict(theirs)), [])

    def test_block_facts_ignore_node_names_and_paths(self):
        device = {"qdev": "/machine/peripheral/virtio-disk0/virtio-backend", "removable": False, "locked": False,
                  "inserted": {"ro": False, "drv": "qcow2", "file": "/tmp/a", "node-name": "libvirt-1-format",
                               "image": {"format": "qcow2", "virtual-size": 1, "filename": "/tmp/a"}}}
        other = {**device, "inserted": {**device["inserted"], "file": "/tmp/b", "node-name": "x"}}
        self.assertEqual(conformance._block([device]), conformance._block([other]))
        self.assertIn('"qdev": "virtio-disk0"', conformance._block([device])[0])


class Preparation(unittest.TestCase):
    def test_one_input_for_both_sides_with_scratch_images(self):
        corpus = conformance.DEFAULT_CORPUS
        with tempfile.TemporaryDirectory() as work:
            prepared = conformance.prepare(corpus / "disk-cache.xml", Path(work), "disk-cache")
            try:
                root = ET.fromstring(prepared.xml)
                self.assertEqual(root.get("type"), "qemu")
                self.assertEqual(root.findtext("name"), "conf-disk-cache")
                sources = [d.find("source").get("file") for d in root.iter("disk")]
                self.assertEqual(len(sources), 5)
                self.assertEqual(len(set(sources)), 5, "every disk gets its own image")
                for source in sources:
                    self.assertTrue(source.startswith(work) and Path(source).exists(), source)
            finally:
                prepared.close()

    def test_nics_without_a_mac_get_a_fixed_one(self):
        with tempfile.TemporaryDirectory() as work:
            prepared = conformance.prepare(conformance.DEFAULT_CORPUS / "x86_64-q35-graphics.xml", Path(work), "g")
            macs = [i.find("mac").get("address") for i in ET.fromstring(prepared.xml).iter("interface")]
            prepared.close()
        self.assertTrue(all(m.startswith("52:54:00:") for m in macs) and macs, macs)


class RealToolsCorpus(unittest.TestCase):
    """Our imitations of real tools' XML must be XML libvirt's schema accepts."""

    SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")

    def test_every_file_matches_libvirts_schema(self):
        import shutil
        import subprocess
        if not self.SCHEMA.exists() or shutil.which("xmllint") is None:
            self.fail(f"{self.SCHEMA} or xmllint is missing: run scripts/apt-deps.sh")
        files = sorted(conformance.REAL_TOOLS_CORPUS.glob("*.xml"))
        self.assertGreaterEqual(len(files), 10)
        for path in files:
            result = subprocess.run(["xmllint", "--noout", "--relaxng", str(self.SCHEMA), str(path)],
                                    capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, f"{path.name}: {result.stderr}")


if __name__ == "__main__":
    unittest.main()
