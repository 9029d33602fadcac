import Foundation
import Testing
@testable import ShimKit

/// Backing chains and startupPolicy on real images made by qemu-img.
@Suite struct DiskStorageChecks {
    let scratch: String

    init() throws {
        scratch = try Fixtures.scratchDirectory("chain")
    }

    /// `qemu-img create`; `backing` with its format, or `nil` format to leave it unrecorded.
    func image(_ name: String, format: String = "qcow2", backing: String? = nil, backingFormat: String? = "qcow2", compat: String? = nil) throws -> String {
        let path = scratch + "/" + name
        var arguments = ["create", "-q", "-f", format]
        var options: [String] = []
        if let compat { options.append("compat=\(compat)") }
        if let backing {
            options.append("backing_file=\(backing)")
            if let backingFormat { options.append("backing_fmt=\(backingFormat)") }
        }
        if !options.isEmpty { arguments += ["-o", options.joined(separator: ",")] }
        arguments += ["-u", path, "16M"]
        guard try Fixtures.qemuImg(arguments) == 0 else { throw ShimError(.internalError, "qemu-img \(arguments) failed") }
        return path
    }

    func domain(_ disks: String) -> String { domainXML(devices: disks) }

    func disk(_ dev: String, _ path: String, format: String = "qcow2", device: String = "disk", bus: String = "virtio", policy: String? = nil) -> String {
        let policyAttribute = policy.map { " startupPolicy='\($0)'" } ?? ""
        return """
                <disk type='file' device='\(device)'><driver name='qemu' type='\(format)'/><source file='\(path)'\(policyAttribute)/><target dev='\(dev)' bus='\(bus)'/></disk>
            """
    }

    func prepare(_ xml: String) throws -> (DomainSpec, [DiskStorage.Drop]) {
        let spec = try Fixtures.prepare(xml, file: "t.xml")
        return try DiskStorage(file: "t.xml").prepare(spec)
    }

    func expectError(_ fragments: [String], _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("no error; expected \(fragments)")
        } catch let error as ShimError {
            for fragment in fragments { #expect(error.message.contains(fragment), "\(error.message) should contain \(fragment)") }
        } catch {
            Issue.record("not a ShimError: \(error)")
        }
    }

    @Test func readsBackingFileAndFormatFromQCOW2Headers() throws {
        defer { FileIO.removeTree(scratch) }
        let base = try image("base.raw", format: "raw")
        for compat in ["0.10", "1.1"] {
            let top = try image("top-\(compat).qcow2", backing: base, backingFormat: "raw", compat: compat)
            let bytes = try DiskStorage.Files.host.read(top, 0, 65536)
            let header = try QCOW2Header.parse(bytes) { _, _ in [] }
            #expect(header?.version == (compat == "0.10" ? 2 : 3))
            #expect(header?.backingFile == base)
            #expect(header?.backingFormat == "raw")
        }
        #expect(try QCOW2Header.parse(try DiskStorage.Files.host.read(base, 0, 65536)) { _, _ in [] } == nil)
    }

    @Test func probesAThreeLevelChainTopDown() throws {
        defer { FileIO.removeTree(scratch) }
        let base = try image("base.raw", format: "raw")
        let middle = try image("middle.qcow2", backing: base, backingFormat: "raw")
        // Relative names are relative to the image that holds them, as in QEMU.
        let top = try image("top.qcow2", backing: "middle.qcow2")
        let (spec, drops) = try prepare(domain(disk("vda", top)))
        #expect(drops.isEmpty)
        let chain = spec.devices.disks[0].backingChain
        #expect(chain.map(\.path) == [middle, base])
        #expect(chain.map(\.format) == [.qcow2, .raw])
        #expect(spec.devices.disks[0].backingChainComplete)

        // QEMU gets every layer, each naming the one below, read-only, as libvirt 9.0 lays them out.
        let plan = try QEMUCommandLine.plan(spec, context: .init(runDirectory: RunDirectory(root: "/run/vmshim", name: "t"), now: 0, localTimeOffset: 0))
        let blockdevs = plan.arguments.enumerated().filter { $0.offset > 0 && plan.arguments[$0.offset - 1] == "-blockdev" }.map(\.element)
        #expect(blockdevs == [
            #"{"driver":"file","filename":"\#(base)","node-name":"libvirt-3-storage","auto-read-only":true,"discard":"unmap"}"#,
            #"{"node-name":"libvirt-3-format","read-only":true,"driver":"raw","file":"libvirt-3-storage"}"#,
            #"{"driver":"file","filename":"\#(middle)","node-name":"libvirt-2-storage","auto-read-only":true,"discard":"unmap"}"#,
            #"{"node-name":"libvirt-2-format","read-only":true,"driver":"qcow2","file":"libvirt-2-storage","backing":"libvirt-3-format"}"#,
            #"{"driver":"file","filename":"\#(top)","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}"#,
            #"{"node-name":"libvirt-1-format","read-only":false,"driver":"qcow2","file":"libvirt-1-storage","backing":"libvirt-2-format"}"#,
        ])
    }

    @Test func aMissingLayerIsNamedWithLibvirtsWording() throws {
        defer { FileIO.removeTree(scratch) }
        let base = try image("base.qcow2")
        let middle = try image("middle.qcow2", backing: base)
        let top = try image("top.qcow2", backing: middle)
        try FileManager.default.removeItem(atPath: middle)
        expectError(["t.xml: Cannot access backing file '\(middle)' of storage file '\(top)' (as uid:\(geteuid()), gid:\(getegid())): No such file or directory"]) {
            _ = try prepare(domain(disk("vda", top)))
        }
        expectError(["Cannot access storage file '\(scratch)/gone.qcow2'", "No such file or directory"]) {
            _ = try prepare(domain(disk("vda", scratch + "/gone.qcow2")))
        }
        // A declared chain is checked as declared.
        let declared = domainXML(devices: """
                <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='\(top)'/>
                  <backingStore type='file'><format type='qcow2'/><source file='\(scratch)/declared.qcow2'/><backingStore/></backingStore>
                  <target dev='vda' bus='virtio'/></disk>
            """)
        expectError(["Cannot access backing file '\(scratch)/declared.qcow2' of storage file '\(top)'"]) { _ = try prepare(declared) }
    }

    /// Older qemu-img wrote overlays without the backing-format extension;
    /// today's refuses to, so turn the extension into an unknown one.
    func forgetBackingFormat(_ path: String) throws {
        var bytes = try FileIO.readBytes(path, limit: 1 << 30)
        let tag: [UInt8] = [0xE2, 0x79, 0x2A, 0xCA]
        let at = try #require((0..<4096).first { Array(bytes[$0..<$0 + 4]) == tag })
        bytes.replaceSubrange(at..<at + 4, with: [0x12, 0x34, 0x56, 0x78])
        try FileIO.writeAtomically(path, bytes, mode: 0o644, durable: false)
        #expect(try QCOW2Header.parse(try DiskStorage.Files.host.read(path, 0, 65536)) { _, _ in [] }?.backingFormat == nil)
    }

    @Test func anUnrecordedBackingFormatIsProbedOnlyWhenSafe() throws {
        defer { FileIO.removeTree(scratch) }
        // Like libvirt: a probed base without a backing file of its own is accepted...
        let raw = try image("base.raw", format: "raw")
        let overRaw = try image("over-raw.qcow2", backing: raw, backingFormat: "raw")
        try forgetBackingFormat(overRaw)
        let (spec, _) = try prepare(domain(disk("vda", overRaw)))
        #expect(spec.devices.disks[0].backingChain.map(\.format) == [.raw])
        // ...one that has its own backing file is refused with libvirt's text.
        let base = try image("base.qcow2")
        let middle = try image("middle.qcow2", backing: base)
        let top = try image("top.qcow2", backing: middle)
        try forgetBackingFormat(top)
        expectError(["format of backing image '\(middle)' of image '\(top)' was not specified in the image metadata"]) {
            _ = try prepare(domain(disk("vda", top)))
        }
    }

    /// What libvirt 9.0 gave on this machine for vda raw, vdb top→middle→base
    /// and vdc optional and missing: tops last disk first (the dropped vdc
    /// keeps 1), then the probed layers.
    @Test func nodeNumbersFollowLibvirt() throws {
        defer { FileIO.removeTree(scratch) }
        let plain = try image("plain.raw", format: "raw")
        let base = try image("base.raw", format: "raw")
        let middle = try image("middle.qcow2", backing: base, backingFormat: "raw")
        let top = try image("top.qcow2", backing: middle)
        let xml = domain([disk("vda", plain, format: "raw"), disk("vdb", top), disk("vdc", scratch + "/gone.qcow2", policy: "optional")].joined(separator: "\n"))
        let (spec, _) = try prepare(xml)
        let plan = try QEMUCommandLine.plan(spec, context: .init(runDirectory: RunDirectory(root: "/run/vmshim", name: "t"), now: 0, localTimeOffset: 0))
        let nodes = plan.arguments.compactMap { argument -> String? in
            guard argument.hasPrefix("{\"driver\":\"file\""), let value = try? JSONValue.parse(argument) else { return nil }
            return "\(value["filename"]?.stringValue ?? "?")=\(value["node-name"]?.stringValue ?? "?")"
        }
        #expect(nodes == [
            "\(plain)=libvirt-3-storage", "\(base)=libvirt-5-storage", "\(middle)=libvirt-4-storage", "\(top)=libvirt-2-storage",
        ])
    }

    @Test func hostileHeadersAreRefusedNotFollowed() throws {
        defer { FileIO.removeTree(scratch) }
        let top = try image("top.qcow2", backing: "/etc/hostname", backingFormat: "raw")
        var bytes = try FileIO.readBytes(top, limit: 1 << 30)
        let name = Array("/etc/hostname".utf8)
        let at = try #require((0..<65536 - name.count).first { Array(bytes[$0..<$0 + name.count]) == name })
        bytes[at + 4] = 0x0A  // a newline inside the name
        try FileIO.writeAtomically(top, bytes, mode: 0o644, durable: false)
        expectError(["'\(top)' has a qcow2 header vmshim cannot use", "control characters"]) { _ = try prepare(domain(disk("vda", top))) }
        // A FIFO as a layer is refused at once instead of blocking the start.
        let fifo = scratch + "/fifo.qcow2"
        #expect(mkfifo(fifo, 0o600) == 0)
        expectError(["'\(fifo)' is neither a regular file nor a block device"]) { _ = try prepare(domain(disk("vda", fifo))) }
    }

    @Test func aDeclaredTerminatedChainIsNotProbed() throws {
        defer { FileIO.removeTree(scratch) }
        let base = try image("base.qcow2")
        let top = try image("top.qcow2", backing: base)
        let xml = domainXML(devices: """
                <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='\(top)'/>
                  <backingStore type='file'><format type='qcow2'/><source file='\(base)'/><backingStore/></backingStore>
                  <target dev='vda' bus='virtio'/></disk>
            """)
        let (spec, _) = try prepare(xml)
        #expect(spec.devices.disks[0].backingChain.map(\.path) == [base])
        // `<backingStore/>` alone says there is none: QEMU must not open one.
        let none = domainXML(devices: """
                <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='\(top)'/><backingStore/>
                  <target dev='vda' bus='virtio'/></disk>
            """)
        let (bare, _) = try prepare(none)
        #expect(bare.devices.disks[0].backingChain.isEmpty)
        #expect(bare.devices.disks[0].backingChainComplete)
    }

    @Test func startupPolicyFollowsLibvirtsTable() throws {
        defer { FileIO.removeTree(scratch) }
        let present = try image("present.qcow2")
        let missing = scratch + "/missing.qcow2"
        let iso = scratch + "/missing.iso"
        // mandatory (default) and requisite fail at cold boot.
        expectError(["Cannot access storage file '\(missing)'"]) { _ = try prepare(domain(disk("vda", missing, policy: "mandatory"))) }
        expectError(["Cannot access storage file '\(iso)'"]) {
            _ = try prepare(domain(disk("sda", iso, format: "raw", device: "cdrom", bus: "sata", policy: "requisite")))
        }
        // requisite is for removable media only, refused at parse time with its line.
        expectError(["t.xml:10:", "disk startupPolicy 'requisite' is allowed only for cdrom or floppy"]) {
            _ = try prepare(domain(disk("vda", present, policy: "requisite")))
        }
        // optional: a cdrom keeps its drive with an empty tray; hard disks go, and
        // the one between them keeps its address.
        let xml = domain([
            disk("vda", missing, policy: "optional"), disk("vdb", present), disk("vdc", missing, policy: "optional"),
            disk("sda", iso, format: "raw", device: "cdrom", bus: "sata", policy: "optional"),
        ].joined(separator: "\n"))
        let before = try Fixtures.prepare(xml, file: "t.xml")
        let (spec, drops) = try prepare(xml)
        #expect(spec.devices.disks.map(\.targetDev) == ["vdb", "sda"])
        #expect(spec.devices.disks[0].pciAddress == before.devices.disks.first { $0.targetDev == "vdb" }?.pciAddress)
        #expect(spec.devices.disks[1].source == nil)
        #expect(spec.devices.disks[1].startupPolicy == nil)
        #expect(drops.map(\.targetDev) == ["vda", "vdc", "sda"])
        #expect(drops.map(\.reason) == ["drop-missing-on-start", "drop-missing-on-start", "missing-on-start"])
        #expect(drops[0].why.contains("Cannot access storage file '\(missing)'"))

        // The live definition shows the running guest: vda and vdc gone, an empty tray, vdb's chain ended.
        let live = try LiveXML.render(source: xml, file: "t.xml", spec: spec, runtime: .init())
        #expect(!live.contains("dev='vda'") && !live.contains("dev=\"vda\""), "\(live)")
        #expect(!live.contains(iso), "\(live)")
        let reparsed = try DomainParser(file: "live").parse(live).spec
        #expect(reparsed.devices.disks.map(\.targetDev) == ["vdb", "sda"])
        #expect(reparsed.devices.disks[0].backingChainComplete)
        #expect(reparsed.devices.disks[1].source == nil)
    }

    /// The "not cold" column: on a restore a requisite cdrom loses its
    /// medium, and an optional hard disk can no longer be left out.
    @Test func restoreUsesTheNotColdColumn() throws {
        defer { FileIO.removeTree(scratch) }
        let missing = scratch + "/missing.qcow2"
        let iso = scratch + "/missing.iso"
        let storage = DiskStorage(file: "t.xml")
        for policy in ["requisite", "optional"] {
            let spec = try Fixtures.prepare(domain(disk("sda", iso, format: "raw", device: "cdrom", bus: "sata", policy: policy)), file: "t.xml")
            let (restored, drops) = try storage.prepare(spec, coldBoot: false)
            #expect(restored.devices.disks.first?.source == nil, "\(policy)")
            #expect(drops.map(\.reason) == ["missing-on-start"], "\(policy)")
        }
        let optionalDisk = try Fixtures.prepare(domain(disk("vdb", missing, policy: "optional")), file: "t.xml")
        expectError(["Cannot access storage file '\(missing)'", "disk 'vdb' was part of the guest when it was saved", "--force-boot"]) {
            _ = try storage.prepare(optionalDisk, coldBoot: false)
        }
        let mandatoryCdrom = try Fixtures.prepare(domain(disk("sda", iso, format: "raw", device: "cdrom", bus: "sata")), file: "t.xml")
        expectError(["Cannot access storage file '\(iso)'"]) { _ = try storage.prepare(mandatoryCdrom, coldBoot: false) }
        // At a cold boot the optional hard disk is still dropped.
        #expect(try storage.prepare(optionalDisk).0.devices.disks.isEmpty)
    }

    @Test func optionalDiskWithABrokenChainIsDropped() throws {
        defer { FileIO.removeTree(scratch) }
        let base = try image("base.qcow2")
        let top = try image("top.qcow2", backing: base)
        try FileManager.default.removeItem(atPath: base)
        let (spec, drops) = try prepare(domain(disk("vda", top, policy: "optional")))
        #expect(spec.devices.disks.isEmpty)
        #expect(drops.first?.why.contains("Cannot access backing file '\(base)' of storage file '\(top)'") == true)
    }
}
