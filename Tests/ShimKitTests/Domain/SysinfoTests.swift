import Foundation
import Testing
@testable import ShimKit

/// `<sysinfo type='smbios'>` with `<os><smbios mode='sysinfo'/>`: the
/// `-smbios` options libvirt 9.0 generates, and what is refused.
@Suite struct SysinfoSMBIOS {
    /// A `domainXML()` guest with `<smbios mode=…>` in its `<os>` (line 6) and
    /// `sysinfo` at the top level (line 8).
    func guest(mode: String? = "sysinfo", sysinfo: String) -> String {
        let xml = domainXML(extra: sysinfo)
        guard let mode else { return xml }
        return xml.replacingOccurrences(of: "hvm</type></os>", with: "hvm</type><smbios mode='\(mode)'/></os>")
    }

    /// The values of the `-smbios` options, in argv order.
    func smbios(_ plan: LaunchPlan) -> [String] {
        plan.arguments.indices.dropLast().filter { plan.arguments[$0] == "-smbios" }.map { plan.arguments[$0 + 1] }
    }

    /// The `-smbios …` lines of a libvirt-style rendering, without the trailing ` \`.
    static func smbiosLines(_ rendered: String) -> [String] {
        rendered.components(separatedBy: "\n")
            .map { $0.hasSuffix(" \\") ? String($0.dropLast(2)) : $0 }
            .filter { $0.hasPrefix("-smbios ") }
    }

    @Test func libvirtCorpusMatchesTheExpectedArgs() throws {
        let xml = try Fixtures.read(Fixtures.corpusDirectory + "/smbios.xml")
        let expected = Self.smbiosLines(try Fixtures.read(Fixtures.corpusDirectory + "/smbios.expected.args"))
        #expect(expected.count == 5)
        let plan = try Fixtures.plan(xml, file: "smbios.xml")
        #expect(Self.smbiosLines(plan.rendered()) == expected)
        // Where libvirt puts them: right after -uuid, before -display.
        let uuid = try #require(plan.arguments.firstIndex(of: "-uuid"))
        #expect(plan.arguments[uuid + 2] == "-smbios")
        #expect(plan.arguments[uuid + 2 + 2 * expected.count] == "-display")
        // A comma in a value is doubled, so it cannot end the option.
        #expect(smbios(plan).last == "type=11,value=Hello,value=World,value=This is,, more tricky value=escaped")
        #expect(parseQemuOpts(smbios(plan).last ?? "").map(\.value) == ["11", "Hello", "World", "This is, more tricky value=escaped"])
    }

    @Test func fieldsInLibvirtsOrder() throws {
        let plan = try Fixtures.plan(
            guest(sysinfo: """
                  <sysinfo type='smbios'>
                    <bios><entry name='release'>1.2</entry><entry name='date'>01/02/2003</entry><entry name='vendor'>V,1</entry></bios>
                    <baseBoard><entry name='product'>P</entry></baseBoard>
                    <baseBoard><entry name='product'></entry></baseBoard>
                    <chassis><entry name='sku'>S</entry></chassis>
                    <oemStrings><entry></entry><entry>x</entry></oemStrings>
                  </sysinfo>
                """))
        // libvirt writes the base board's and the chassis' manufacturer even
        // when empty, skips an empty base board, and keeps empty OEM strings.
        #expect(
            smbios(plan) == [
                "type=0,vendor=V,,1,date=01/02/2003,release=1.2",
                "type=2,manufacturer=,product=P",
                "type=3,manufacturer=,sku=S",
                "type=11,value=,value=x",
            ])
    }

    @Test func withoutModeSysinfoTheTablesAreCheckedButNotApplied() throws {
        let block = "  <sysinfo type='smbios'><bios><entry name='vendor'>V</entry></bios></sysinfo>"
        for mode in [nil, "emulate"] as [String?] {
            let xml = guest(mode: mode, sysinfo: block)
            #expect(try Fixtures.prepare(xml).sysinfo == nil)
            #expect(smbios(try Fixtures.plan(xml)).isEmpty)
        }
        #expect(throws: ShimError.self) {
            try Fixtures.prepare(
                guest(mode: nil, sysinfo: "  <sysinfo type='smbios'><bios><entry name='date'>13/01/2020</entry></bios></sysinfo>"))
        }
    }

    @Test func theSystemUUIDBecomesTheDomainsWhenItHasNone() throws {
        let xml = guest(
            sysinfo: "  <sysinfo type='smbios'><system><entry name='uuid'>C7A5FDBD-EDAF-9455-926A-D65C16DB1809</entry></system></sysinfo>"
        ).replacingOccurrences(of: "<uuid>11111111-2222-3333-4444-555555555555</uuid>", with: "")
        let plan = try Fixtures.plan(xml)
        let uuid = try #require(plan.arguments.firstIndex(of: "-uuid"))
        #expect(plan.arguments[uuid + 1] == "c7a5fdbd-edaf-9455-926a-d65c16db1809")
        #expect(smbios(plan) == ["type=1,uuid=c7a5fdbd-edaf-9455-926a-d65c16db1809"])
    }

    @Test func theLiveDefinitionKeepsTheTables() throws {
        let xml = try Fixtures.read(Fixtures.corpusDirectory + "/smbios.xml")
        let spec = try Fixtures.prepare(xml, file: "smbios.xml")
        #expect(spec.sysinfo?.oemStrings.count == 3)
        let live = try LiveXML.render(source: xml, file: "smbios.xml", spec: spec, runtime: LiveXML.Runtime())
        #expect(live.contains("<smbios mode='sysinfo'/>"))
        #expect(try DomainParser(file: "live.xml").parse(live).spec.sysinfo == spec.sysinfo)
    }

    @Test func biosDatesAndReleases() {
        // libvirt: mm/dd/yy or mm/dd/yyyy, year 0–99 or from 1900.
        for good in ["01/02/2003", "1/2/03", "12/31/99", "12/31/1900", "02/30/2024"] {
            #expect(DomainParser.isBIOSDate(good), "\(good)")
        }
        for bad in ["13/01/2020", "00/01/2020", "01/32/2020", "01/01/100", "01/01/1899", "01/01/-1", "01-01-2020", "01/01/2020 ", "01/01/", ""] {
            #expect(!DomainParser.isBIOSDate(bad), "\(bad)")
        }
        // QEMU stores major and minor as bytes.
        for good in ["0.0", "1.2", "255.255"] {
            #expect(DomainParser.isBIOSRelease(good), "\(good)")
        }
        for bad in ["1", "1.", ".1", "1.2.3", "256.0", "a.b", " 1.2", "-1.2"] {
            #expect(!DomainParser.isBIOSRelease(bad), "\(bad)")
        }
    }

    /// `<sysinfo type='fwcfg'>` entries become `-fw_cfg` right after the
    /// SMBIOS tables, as libvirt 9.0 writes them, whether or not the tables
    /// apply; a comma in a value is doubled (libvirt 9.0 does not, and QEMU
    /// then refuses the option).
    @Test func firmwareConfigEntriesFollowTheTables() throws {
        let xml = guest(
            mode: nil,
            sysinfo: """
                  <sysinfo type='fwcfg'>
                    <entry name='opt/com.coreos/config' file='/var/lib/fcos/config.ign'/>
                    <entry name='opt/com.example/greeting'>hello, world</entry>
                  </sysinfo>
                """)
        let plan = try Fixtures.plan(xml, file: "t.xml")
        let uuid = try #require(plan.arguments.firstIndex(of: "-uuid"))
        #expect(Array(plan.arguments[(uuid + 2)..<(uuid + 6)]) == [
            "-fw_cfg", "name=opt/com.coreos/config,file=/var/lib/fcos/config.ign",
            "-fw_cfg", "name=opt/com.example/greeting,string=hello,, world",
        ])
        #expect(parseQemuOpts(plan.arguments[uuid + 5]).map(\.value) == ["opt/com.example/greeting", "hello, world"])
    }

    /// Every refusal names the file, the line, the element and what is wrong.
    @Test(arguments: [
        // (mode, sysinfo on line 8, expected fragments)
        ("sysinfo",
         "  <sysinfo type='smbios'><system><entry name='uuid'>22222222-2222-3333-4444-555555555555</entry></system></sysinfo>",
         ["t.xml:8:", "<entry>", "/domain/sysinfo/system/entry", "UUID mismatch between <uuid> and <sysinfo>"]),
        ("host", "", ["t.xml:6:", "<smbios>", "/domain/os/smbios", "mode='host'", "dmidecode", "does not support"]),
        ("sysinfo", "", ["t.xml:6:", "<smbios>", "needs a <sysinfo type='smbios'>"]),
        ("none", "", ["t.xml:6:", "mode='none'"]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='etc/x'>y</entry></sysinfo>",
         ["t.xml:8:", "/domain/sysinfo/entry", "'etc/x' must start with opt/"]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/ovmf/X-PciMmio64Mb'>64</entry></sysinfo>",
         ["t.xml:8:", "reserved for OVMF or QEMU"]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/org.qemu/x'>y</entry></sysinfo>", ["t.xml:8:", "reserved"]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/com.example/\(String(repeating: "a", count: 50))'>y</entry></sysinfo>",
         ["t.xml:8:", "66 bytes; QEMU allows at most 55"]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/a'>1</entry><entry name='opt/a'>2</entry></sysinfo>",
         ["t.xml:8:", "/domain/sysinfo/entry[2]", "given twice"]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/a' file='/x'>1</entry></sysinfo>", ["t.xml:8:", "both a value and file="]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/a'/></sysinfo>", ["t.xml:8:", "needs a value or file="]),
        ("emulate", "  <sysinfo type='fwcfg'><entry name='opt/a' file='x.ign'/></sysinfo>", ["t.xml:8:", "absolute path"]),
        ("sysinfo", "  <sysinfo type='smbios'><bios><entry name='date'>2020-01-02</entry></bios></sysinfo>",
         ["t.xml:8:", "/domain/sysinfo/bios/entry", "Invalid BIOS 'date' format"]),
        ("sysinfo", "  <sysinfo type='smbios'><bios><entry name='release'>1</entry></bios></sysinfo>",
         ["t.xml:8:", "major.minor"]),
        ("sysinfo", "  <sysinfo type='smbios'><bios><entry name='vendor'>a</entry><entry name='vendor'>b</entry></bios></sysinfo>",
         ["t.xml:8:", "/domain/sysinfo/bios/entry[2]", "repeated"]),
        ("sysinfo", "  <sysinfo type='smbios'><bios><entry name='serial'>a</entry></bios></sysinfo>",
         ["t.xml:8:", "name='serial'"]),
        ("sysinfo",
         "  <sysinfo type='smbios'><baseBoard><entry name='product'>a</entry></baseBoard><baseBoard><entry name='product'>b</entry></baseBoard></sysinfo>",
         ["t.xml:8:", "/domain/sysinfo/baseBoard[2]", "Type 2"]),
        ("sysinfo", "  <sysinfo type='smbios'><processor><entry name='family'>x</entry></processor></sysinfo>",
         ["t.xml:8:", "<processor>", "not supported"]),
    ] as [(String, String, [String])])
    func refusesWithLocation(mode: String, sysinfo: String, fragments: [String]) {
        do {
            _ = try Fixtures.prepare(guest(mode: mode, sysinfo: sysinfo), file: "t.xml")
            Issue.record("accepted: mode='\(mode)' \(sysinfo)")
        } catch let error as ShimError {
            for fragment in fragments {
                #expect(error.message.contains(fragment), "\(error.message) should contain \(fragment)")
            }
        } catch {
            Issue.record("not a ShimError: \(error)")
        }
    }
}
