import Foundation
import Testing
@testable import ShimKit

/// A domain whose <devices> holds `devices` (starting on line 10) and whose
/// top level holds `extra` (line 8).
func domainXML(devices: String = "", extra: String = "", type: String = "qemu", machine: String = "pc") -> String {
    """
    <domain type='\(type)'>
      <name>t</name>
      <uuid>11111111-2222-3333-4444-555555555555</uuid>
      <memory unit='MiB'>128</memory>
      <vcpu>1</vcpu>
      <os><type arch='x86_64' machine='\(machine)'>hvm</type></os>
      <on_poweroff>destroy</on_poweroff>
    \(extra)
      <devices>
    \(devices)
        <emulator>/usr/bin/qemu-system-x86_64</emulator>
      </devices>
    </domain>
    """
}

@Suite struct DomainParsing {
    @Test func readsResourceTuningWithLibvirtsUnits() throws {
        let xml = domainXML(extra: """
              <memtune><hard_limit unit='MiB'>512</hard_limit><soft_limit unit='bytes'>0</soft_limit><swap_hard_limit unit='KB'>1048576</swap_hard_limit></memtune>
              <cputune><shares>512</shares><period>50000</period><quota>-1</quota></cputune>
              <blkiotune><weight>300</weight></blkiotune>
            """)
        let tuning = try DomainParser(file: "t.xml").parse(xml).spec.tuning
        #expect(tuning.memoryHardLimitKiB == 524_288)
        #expect(tuning.memorySoftLimitKiB == 0)
        #expect(tuning.swapHardLimitKiB == 1_024_000)
        #expect(tuning.cpuShares == 512 && tuning.cpuPeriodMicros == 50_000 && tuning.cpuQuotaMicros == -1)
        #expect(tuning.blkioWeight == 300)
        #expect(try DomainParser(file: "t.xml").parse(domainXML()).spec.tuning.isEmpty)
    }

    @Test func parsesTheCoreModel() throws {
        let xml = try Fixtures.read(Fixtures.sourceDirectory + "/domains/q35-virtio.xml")
        let spec = try Fixtures.prepare(xml)
        #expect(spec.name == "q35-virtio")
        #expect(spec.uuid.description == "c7a5fdbd-edaf-9455-926a-d65c16db1809")
        #expect(spec.memory.maximumKiB == 2 * 1024 * 1024)
        #expect(spec.memory.currentKiB == 1536 * 1024)
        #expect(spec.vcpus.maximum == 2)
        #expect(spec.cpu.topology?.cores == 2)
        #expect(spec.os.machine == "q35")
        #expect(spec.features.acpi && spec.features.apic)
        #expect(spec.lifecycle.onReboot == .restart)
        #expect(spec.devices.disks.map(\.targetDev) == ["vda", "sda"])
        #expect(spec.devices.disks[0].format == .qcow2)
        #expect(spec.devices.disks[0].cache == DomainSpec.Disk.Cache.none)
        #expect(spec.devices.disks[1].readOnly)
        #expect(spec.devices.disks[1].bootOrder == 1)
        #expect(spec.devices.interfaces.first?.mac == "52:54:00:12:34:56")
        #expect(spec.devices.memballoon?.statsPeriodSeconds == 5)
        #expect(spec.devices.rngs.count == 1)
        #expect(spec.devices.graphics.count == 1)
    }

    @Test(arguments: [
        ("<memory unit='GiB'>1</memory>", 1024 * 1024),
        ("<memory unit='M'>100</memory>", 102_400),  // libvirt: M is MiB
        ("<memory unit='MB'>100</memory>", 97_657),  // 10^8 bytes, rounded up to KiB
        ("<memory unit='b'>1048576</memory>", 1024),
        ("<memory>65536</memory>", 65536),
    ] as [(String, UInt64)])
    func memoryUnits(element: String, kib: UInt64) throws {
        let xml = domainXML().replacingOccurrences(of: "<memory unit='MiB'>128</memory>", with: element)
        let spec = try DomainParser(file: "t.xml").parse(xml).spec
        #expect(spec.memory.maximumKiB == kib)
    }

    /// Every refusal names the file, the line, the element and what is wrong.
    @Test(arguments: [
        // (devices, extra, expected fragments)
        ("    <hostdev mode='subsystem' type='pci'/>", "", ["t.xml:10:", "<hostdev>", "/domain/devices/hostdev", "not supported"]),
        ("    <disk type='network' device='disk'><source protocol='nbd' name='x'/><target dev='vda'/></disk>", "",
         ["t.xml:10:", "<disk>", "type='network'"]),
        ("    <disk type='file' device='disk'><source file='/x' bogus='1'/><target dev='vda' bus='virtio'/></disk>", "",
         ["t.xml:10:", "bogus='1'", "<source>", "not supported"]),
        ("    <disk type='file' device='disk'><source file='relative.img'/><target dev='vda' bus='virtio'/></disk>", "",
         ["t.xml:10:", "relative.img"]),
        ("    <disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='sd'/></disk>", "",
         ["t.xml:10:", "bus='sd'"]),
        ("    <disk type='file' device='disk'><source file='/a'/><target dev='sda' bus='scsi'/><address type='drive' controller='0' bus='0' target='0' unit='7'/></disk>", "",
         ["t.xml:10:", "lsilogic", "units 0 to 6"]),
        ("    <controller type='usb' model='none'/>\n    <disk type='file' device='disk'><source file='/a'/><target dev='sdb' bus='usb'/></disk>", "",
         ["t.xml:11:", "USB disk 'sdb'"]),
        ("    <watchdog model='ib700'/>\n    <watchdog model='i6300esb'/>", "", ["t.xml:11:", "single watchdog"]),
        ("    <watchdog model='ib700' action='dump'/>", "", ["t.xml:10:", "action='dump'"]),
        ("    <interface type='user'><model type='e1000'/><driver txmode='iothread'/></interface>", "", ["t.xml:10:", "model type='virtio'"]),
        ("    <interface type='user'><model type='virtio'/><driver queues='4'/></interface>", "", ["t.xml:10:", "multiqueue"]),
        ("", "  <clock offset='utc'><timer name='pit' tickpolicy='delay'><catchup threshold='1'/></timer></clock>",
         ["t.xml:8:", "tickpolicy='catchup'"]),
        ("    <disk type='file' device='disk'><driver name='qemu' type='vmdk'/><source file='/a'/><target dev='vda' bus='virtio'/></disk>", "",
         ["t.xml:10:", "vmdk"]),
        ("    <interface type='vhostuser'><source type='unix' path='/tmp/vu' mode='server'/><model type='virtio'/></interface>", "", ["t.xml:10:", "<interface>", "type='vhostuser'"]),
        ("    <interface type='bridge'/>", "", ["t.xml:10:", "<source bridge='NAME'/>"]),
        ("    <interface type='bridge'><source bridge='br0'/><target dev='t0' managed='no'/></interface>", "", ["t.xml:10:", "managed='no'"]),
        ("    <interface type='user'><mac address='zz:54:00:00:00:01'/></interface>", "", ["t.xml:10:", "zz:54:00:00:00:01"]),
        ("    <serial type='spicevmc'/>", "", ["t.xml:10:", "type='spicevmc'"]),
        ("    <serial type='tcp'><source mode='bind' host='0' service='4444'/><protocol type='tls'/></serial>", "", ["t.xml:10:", "protocol 'tls'"]),
        ("    <graphics type='sdl'/>", "", ["t.xml:10:", "<graphics>", "sdl"]),
        ("", "  <memtune><min_guarantee>1</min_guarantee></memtune>", ["t.xml:8:", "min_guarantee"]),
        ("", "  <cputune><vcpupin vcpu='1' cpuset='1'/></cputune>", ["t.xml:8:", "vcpupin names vCPU 1; the domain has vCPUs 0 to 0"]),
        ("", "  <cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='0' cpuset='0'/></cputune>", ["t.xml:8:", "pinned twice"]),
        ("", "  <cputune><emulatorpin cpuset='x'/></cputune>", ["t.xml:8:", "cpuset='x'"]),
        ("", "  <cputune><iothreadpin iothread='1' cpuset='0'/></cputune>", ["t.xml:8:", "iothread 1, which the domain does not have"]),
        ("", "  <cputune><vcpusched vcpus='0' scheduler='fifo' priority='1'/></cputune>", ["t.xml:8:", "vcpusched"]),
        ("", "  <memtune><hard_limit>2048</hard_limit><swap_hard_limit>1024</swap_hard_limit></memtune>",
         ["t.xml:8:", "hard_limit tuning value must be less than or equal to swap_hard_limit"]),
        ("", "  <cputune><quota>500</quota></cputune>", ["t.xml:8:", "<quota>"]),
        ("", "  <cputune><period>10</period></cputune>", ["t.xml:8:", "<period> '10' must be an integer in 1000…1000000"]),
        ("", "  <blkiotune><weight>5</weight></blkiotune>", ["t.xml:8:", "<weight> '5'"]),
        ("", "  <resource register='none'/><memtune><hard_limit>1</hard_limit></memtune>",
         ["t.xml:8:", "register='none' keeps QEMU in the caller's cgroup"]),
        ("", "  <on_crash>explode</on_crash>", ["t.xml:8:", "<on_crash>", "explode"]),
        ("", "  <cpu mode='custom'><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>",
         ["t.xml:8:", "topology", "2"]),
        // Found while filling in defaults: still the line of the offending element.
        ("    <serial type='pty'><target port='1'/></serial>\n    <serial type='pty'><target port='1'/></serial>", "",
         ["t.xml:11:", "target port 1"]),
        ("    <disk type='file' device='disk'><source file='/a'/><target dev='sda' bus='sata'/><readonly/></disk>", "",
         ["t.xml:10:", "readonly sata"]),
        ("    <controller type='pci' index='0' model='pcie-root'/>", "", ["t.xml:10:", "q35"]),
        ("    <video><model type='vga' primary='yes'/></video>\n    <video><model type='qxl' primary='yes'/></video>", "",
         ["t.xml:11:", "primary='yes'"]),
        ("    <rng model='virtio'><backend model='random'>/dev/urandom</backend><address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></rng>\n"
            + "    <rng model='virtio'><backend model='random'>/dev/urandom</backend><address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></rng>", "",
         ["t.xml:11:", "used twice"]),
    ] as [(String, String, [String])])
    func refusesWithLocation(devices: String, extra: String, fragments: [String]) {
        let xml = domainXML(devices: devices, extra: extra)
        do {
            let parsed = try DomainParser(file: "t.xml").parse(xml)
            _ = try DomainDefaults(file: "t.xml", environment: Fixtures.environment(name: "t")).apply(parsed.spec)
            Issue.record("accepted: \(devices)\(extra)")
        } catch let error as ShimError {
            for fragment in fragments {
                #expect(error.message.contains(fragment), "\(error.message) should contain \(fragment)")
            }
        } catch {
            Issue.record("not a ShimError: \(error)")
        }
    }

    @Test func malformedXMLNamesTheLine() {
        let xml = "<domain type='qemu'>\n  <name>t</name>\n  <memory>1</memory\n</domain>"
        #expect {
            try DomainParser(file: "bad.xml").parse(xml)
        } throws: { error in
            let message = (error as? ShimError)?.message ?? ""
            return message.hasPrefix("bad.xml:4:") && message.contains("not well-formed")
        }
    }

    @Test func missingRequiredElements() {
        let withoutName = domainXML().replacingOccurrences(of: "<name>t</name>", with: "")
        #expect(throws: ShimError.self) { try DomainParser(file: "t.xml").parse(withoutName) }
        let withoutMemory = domainXML().replacingOccurrences(of: "<memory unit='MiB'>128</memory>", with: "")
        #expect(throws: ShimError.self) { try DomainParser(file: "t.xml").parse(withoutMemory) }
    }

    @Test func badUUIDIsRefused() {
        let xml = domainXML().replacingOccurrences(of: "11111111-2222-3333-4444-555555555555", with: "not-a-uuid")
        #expect {
            try DomainParser(file: "t.xml").parse(xml)
        } throws: { error in
            ((error as? ShimError)?.message ?? "").contains("t.xml:3:")
        }
    }

    @Test func nameWithCommaIsEscapedOnArgv() throws {
        let xml = domainXML().replacingOccurrences(of: "<name>t</name>", with: "<name>a,b</name>")
        let plan = try Fixtures.plan(xml)
        let name = try #require(plan.arguments.firstIndex(of: "-name").map { plan.arguments[$0 + 1] })
        #expect(parseQemuOpts(name).map(\.key) == ["guest", "debug-threads"])
        #expect(parseQemuOpts(name)[0].value == "a,b")
    }

    @Test func unknownNamespacedMetadataIsKept() throws {
        let xml = domainXML(extra: "  <metadata><app:x xmlns:app='http://example.org/app'>1</app:x></metadata>")
        _ = try Fixtures.prepare(xml)
    }
}

/// libvirt's own test corpus: every file is either accepted or refused with a
/// located message; nothing crashes and nothing is half-accepted.
@Suite struct LibvirtCorpus {
    static let files: [String] = {
        ((try? FileManager.default.contentsOfDirectory(atPath: Fixtures.corpusDirectory)) ?? [])
            .filter { $0.hasSuffix(".xml") }.sorted()
    }()

    @Test func corpusIsPresent() {
        #expect(Self.files.count >= 30, "libvirt corpus not found at \(Fixtures.corpusDirectory)")
    }

    @Test(arguments: files) func acceptedOrRefusedWithLocation(file: String) throws {
        let xml = try Fixtures.read(Fixtures.corpusDirectory + "/" + file)
        do {
            let plan = try Fixtures.plan(xml, file: file)
            #expect(plan.arguments.contains("-S"))
        } catch let error as ShimError {
            #expect(error.message.hasPrefix("\(file):"), "\(error.message)")
            #expect(error.message.contains("<"), "the refusal should name an element: \(error.message)")
        }
    }

    /// For accepted files with libvirt's expected argv, every -device line
    /// matches libvirt's (node names normalised: libvirt 9.0 adds a format
    /// layer over raw host devices that the newer expected files drop).
    @Test(arguments: files) func devicesMatchLibvirt(file: String) throws {
        let expectedPath = Fixtures.corpusDirectory + "/" + file.dropLast(4) + ".expected.args"
        guard FileManager.default.fileExists(atPath: expectedPath) else { return }
        let xml = try Fixtures.read(Fixtures.corpusDirectory + "/" + file)
        guard let plan = try? Fixtures.plan(xml, file: file) else { return }
        func devices(_ lines: [String]) -> [String] {
            lines.map { $0.hasSuffix(" \\") ? String($0.dropLast(2)) : $0 }
                .filter { $0.hasPrefix("-device ") }
                .map { $0.replacingOccurrences(of: #"libvirt-(\d+)-(format|storage)"#, with: "libvirt-$1", options: .regularExpression) }
        }
        let ours = devices(plan.rendered().components(separatedBy: "\n"))
        let theirs = devices(try Fixtures.read(expectedPath).components(separatedBy: "\n"))
        #expect(ours == theirs, "\(file): -device lines differ")
    }
}
