import Foundation
import Testing
@testable import ShimKit

/// The live definition is what a restarted shim reattaches with: it must
/// describe exactly the hardware the running QEMU has.
@Suite struct LiveDefinition {
    static let fixtures = GoldenArgv.names + ["no-emulator", "console-on-port-1", "hotplug-spice-floppy-q35"]

    func source(_ name: String) throws -> String {
        if name == "no-emulator" {
            return domainXML().replacingOccurrences(of: "<emulator>/usr/bin/qemu-system-x86_64</emulator>", with: "")
        }
        if name == "console-on-port-1" {
            // The console implies a second serial port; the first keeps port 0.
            return domainXML(devices: """
                    <serial type='pty'><target port='0'/></serial>
                    <console type='file'><source path='/var/log/c.log'/><target type='serial' port='1'/></console>
                """)
        }
        if name == "hotplug-spice-floppy-q35" {
            // What this session's hardware adds, with everything vmshim assigns itself
            // (DIMM slot, virtio-mem and IOMMU addresses, USB ports, display ports).
            return domainXML(devices: """
                    <memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>
                    <memory model='virtio-mem'><target><size unit='MiB'>256</size><node>1</node><block unit='MiB'>2</block><requested unit='MiB'>64</requested></target></memory>
                    <disk type='file' device='floppy'><source file='/f.img'/><target dev='fdb'/></disk>
                    <disk type='file' device='disk'><source file='/a'/><target dev='sda' bus='sata'/><geometry cyls='100' heads='16' secs='63'/></disk>
                    <interface type='ethernet'><target dev='mq0'/><model type='virtio'/><driver queues='2'/></interface>
                    <channel type='spicevmc'><target type='virtio'/></channel>
                    <input type='tablet' bus='usb'/>
                    <graphics type='spice' autoport='yes'/>
                    <graphics type='vnc' autoport='yes'/>
                    <redirdev bus='usb' type='spicevmc'/>
                    <iommu model='virtio'/>
                    <panic model='hyperv'/>
                """, extra: """
                  <maxMemory slots='4' unit='MiB'>2048</maxMemory>
                  <cpu><numa><cell id='0' cpus='0' memory='128' unit='MiB'/><cell id='1' cpus='1' memory='128' unit='MiB'/></numa></cpu>
                  <features><acpi/><hyperv><relaxed state='on'/></hyperv><kvm><hidden state='on'/></kvm></features>
                """, machine: "q35").replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu>2</vcpu>")
        }
        return try Fixtures.read(Fixtures.sourceDirectory + "/domains/\(name).xml")
    }

    @Test(arguments: fixtures) func parsesBackToTheSameArgv(name: String) throws {
        let xml = try source(name)
        let spec = try Fixtures.prepare(xml, file: "\(name).xml")
        let runtime = LiveXML.Runtime(charDevicePaths: ["serial0": "/dev/pts/7"], canonicalMachine: nil)
        let live = try LiveXML.render(source: xml, file: "\(name).xml", spec: spec, runtime: runtime)
        // No MAC, VNC port or UUID is generated a second time: they are in the live XML.
        let reparsed = try DomainParser(file: "live.xml").parse(live).spec
        let again = try DomainDefaults(
            file: "live.xml",
            environment: DomainDefaults.Environment(
                runDirectory: RunDirectory(root: "/run/vmshim", name: spec.name),
                randomMAC: { "52:54:00:ff:ff:ff" }, freeDisplayPort: { _, _ in 5999 }, isLiveDefinition: true)
        ).apply(reparsed)
        let context = QEMUCommandLine.Context(
            runDirectory: RunDirectory(root: "/run/vmshim", name: spec.name), now: Fixtures.fixedNow, localTimeOffset: 3600)
        let before = try QEMUCommandLine.plan(spec, context: context).arguments
        let after = try QEMUCommandLine.plan(again, context: context).arguments
        let difference = zip(before, after).first { $0.0 != $0.1 }
        #expect(before == after, "first difference: \(difference.map { "\($0.0) -> \($0.1)" } ?? "length")\n\(live)")
        #expect(live.contains("<uuid>\(spec.uuid)</uuid>"))
        #expect(live.contains("<emulator>/usr/bin/qemu-system-x86_64</emulator>"))
    }

    @Test func recordsWhatQEMUResolved() throws {
        let xml = try source("kernel-boot")
        let spec = try Fixtures.prepare(xml)
        let live = try LiveXML.render(
            source: xml, file: "k.xml", spec: spec,
            runtime: LiveXML.Runtime(charDevicePaths: ["serial0": "/dev/pts/7"], canonicalMachine: "pc-i440fx-7.2"))
        #expect(live.contains("machine='pc-i440fx-7.2'"))
        #expect(live.contains("/dev/pts/7"))
        #expect(live.contains("<alias name='serial0'/>"))
        #expect(live.contains("<address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>"))
    }
}
