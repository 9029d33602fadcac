import Foundation
import Testing
@testable import ShimKit

/// UEFI as libvirt 9.0 fills it in and passes it to QEMU, with Debian's OVMF
/// descriptors (Fixtures/firmware). The conformance suite checks the same
/// against a live libvirt (real-tools/uefi-*.xml).
@Suite struct Firmware {
    func uefiXML(machine: String, os: String = "firmware='efi'", osInside: String = "", features: String = "<acpi/>") -> String {
        domainXML(machine: machine)
            .replacingOccurrences(of: "<os><type", with: "<os \(os)><type")
            .replacingOccurrences(of: "hvm</type></os>", with: "hvm</type>\(osInside)</os>")
            .replacingOccurrences(of: "<on_poweroff>", with: "<features>\(features)</features>\n  <on_poweroff>")
    }

    @Test func autoselectionPicksLikeLibvirt() throws {
        let q35 = try Fixtures.prepare(uefiXML(machine: "q35"))
        #expect(q35.os.firmware?.loader == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
        #expect(q35.os.firmware?.nvramTemplate == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        #expect(q35.os.firmware?.secure == true && q35.features.smm == true)
        #expect(q35.os.firmware?.nvram == "/var/lib/vmshim/nvram/t_VARS.fd")

        let pc = try Fixtures.prepare(uefiXML(machine: "pc"))
        #expect(pc.os.firmware?.loader == "/usr/share/OVMF/OVMF_CODE_4M.fd" && pc.os.firmware?.secure == nil)
        #expect(pc.features.smm == nil)

        let noSecureBoot = try Fixtures.prepare(uefiXML(
            machine: "q35", osInside: "<firmware><feature enabled='no' name='secure-boot'/></firmware>"))
        #expect(noSecureBoot.os.firmware?.loader == "/usr/share/OVMF/OVMF_CODE_4M.fd")
        let noKeys = try Fixtures.prepare(uefiXML(
            machine: "q35", osInside: "<firmware><feature enabled='no' name='enrolled-keys'/></firmware>"))
        #expect(noKeys.os.firmware?.loader == "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
        #expect(noKeys.os.firmware?.nvramTemplate == "/usr/share/OVMF/OVMF_VARS_4M.fd")

    }

    @Test func theCommandLineHasBothFlashesAndSecureBoot() throws {
        let plan = try Fixtures.plan(uefiXML(machine: "q35"))
        let args = plan.arguments
        let blockdevs = args.indices.dropLast().filter { args[$0] == "-blockdev" }.map { args[$0 + 1] }
        #expect(Array(blockdevs.prefix(4)) == [
            #"{"driver":"file","filename":"/usr/share/OVMF/OVMF_CODE_4M.ms.fd","node-name":"libvirt-pflash0-storage","auto-read-only":true,"discard":"unmap"}"#,
            #"{"node-name":"libvirt-pflash0-format","read-only":true,"driver":"raw","file":"libvirt-pflash0-storage"}"#,
            #"{"driver":"file","filename":"/var/lib/vmshim/nvram/t_VARS.fd","node-name":"libvirt-pflash1-storage","auto-read-only":true,"discard":"unmap"}"#,
            #"{"node-name":"libvirt-pflash1-format","read-only":false,"driver":"raw","file":"libvirt-pflash1-storage"}"#,
        ])
        let machine = try #require(args.firstIndex(of: "-machine").map { args[$0 + 1] })
        #expect(machine == "q35,usb=off,smm=on,dump-guest-core=off,memory-backend=pc.ram,pflash0=libvirt-pflash0-format,pflash1=libvirt-pflash1-format")
        let cpu = try #require(args.firstIndex(of: "-cpu"))
        #expect(args[cpu + 2] == "-global" && args[cpu + 3] == "driver=cfi.pflash01,property=secure,value=on")
    }

    @Test func explicitLoadersAndTheirTemplates() throws {
        let explicit = try Fixtures.prepare(uefiXML(
            machine: "pc", os: "", osInside: "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader><nvram>/vm/x_VARS.fd</nvram>"))
        #expect(explicit.os.firmware?.nvram == "/vm/x_VARS.fd")
        #expect(explicit.os.firmware?.nvramTemplate == "/usr/share/OVMF/OVMF_VARS_4M.fd", "looked up from the descriptors")
        #expect(explicit.os.firmware?.autoselect == false)
    }

    @Test(arguments: [
        (machine: "q35", os: "firmware='efi'", osInside: "", features: "", fragment: "UEFI requires ACPI"),
        (machine: "pc", os: "", osInside: "<loader readonly='yes' secure='yes' type='pflash'>/x.fd</loader>", features: "<acpi/>", fragment: "q35"),
        (machine: "q35", os: "", osInside: "<loader readonly='yes' secure='yes' type='pflash'>/x.fd</loader>", features: "<acpi/>", fragment: "smm state='on'"),
        (machine: "pc", os: "firmware='efi'", osInside: "<firmware><feature enabled='yes' name='enrolled-keys'/></firmware>", features: "<acpi/>", fragment: "no UEFI firmware"),
        (machine: "pc", os: "firmware='efi'", osInside: "<firmware><feature enabled='yes' name='secure-boot'/></firmware>", features: "<acpi/>", fragment: "secure-boot on"),
        (machine: "pc", os: "", osInside: "<loader type='rom'>/x.fd</loader>", features: "<acpi/>", fragment: "type='rom'"),
        (machine: "q35", os: "firmware='efi'", osInside: "", features: "<acpi/><smm state='off'/>", fragment: "SMM is switched off"),
        (machine: "pc", os: "", osInside: "<nvram>/x</nvram>", features: "<acpi/>", fragment: "<nvram> needs"),
    ])
    func refusals(machine: String, os: String, osInside: String, features: String, fragment: String) {
        let xml = uefiXML(machine: machine, os: os, osInside: osInside, features: features)
        #expect(throws: ShimError.self) { try Fixtures.prepare(xml) }
        do {
            _ = try Fixtures.prepare(xml)
        } catch let error as ShimError {
            #expect(error.message.contains(fragment), "\(error.message)")
            #expect(error.message.hasPrefix("test.xml:"), "\(error.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    /// The store is copied from the template once, then left to the guest.
    @Test func theVariableStoreIsMadeOnceFromItsTemplate() throws {
        let scratch = try Fixtures.scratchDirectory("nvram")
        defer { FileIO.removeTree(scratch) }
        try Data("template".utf8).write(to: URL(fileURLWithPath: scratch + "/VARS.fd"))
        var firmware = DomainSpec.Firmware(autoselect: false)
        firmware.nvramTemplate = scratch + "/VARS.fd"
        firmware.nvram = scratch + "/store/guest_VARS.fd"
        try NVRAMStore.prepare(firmware, owner: nil)
        #expect(try FileIO.readString(scratch + "/store/guest_VARS.fd") == "template")
        try Data("guest wrote".utf8).write(to: URL(fileURLWithPath: scratch + "/store/guest_VARS.fd"))
        try NVRAMStore.prepare(firmware, owner: nil)
        #expect(try FileIO.readString(scratch + "/store/guest_VARS.fd") == "guest wrote")
        firmware.nvram = scratch + "/other_VARS.fd"
        firmware.nvramTemplate = nil
        #expect(throws: ShimError.self) { try NVRAMStore.prepare(firmware, owner: nil) }
    }
}
