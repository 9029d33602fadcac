/// `<sysinfo>` and `<os><smbios mode>`, read the way libvirt 9.0 reads them
/// (virSysinfoParseXML). The checks libvirt only makes when it builds the
/// command line (qemuBuildSmbiosCommandLine) are made here, before anything
/// starts.
extension DomainParser {
    /// The SMBIOS tables QEMU gets, or nil for QEMU's own: only
    /// `<smbios mode='sysinfo'/>` applies a `<sysinfo type='smbios'>`; without
    /// it the block is still checked, as libvirt does, and has no effect. As in
    /// libvirt, a domain without `<uuid>` takes the system `uuid` entry as its
    /// UUID; with one, the two must be equal.
    func parseSysinfo(_ root: XMLElement, uuid: inout DomainUUID) throws -> DomainSpec.Sysinfo? {
        let uuidGenerated = root.firstElement(named: "uuid") == nil
        var smbios: (sysinfo: DomainSpec.Sysinfo, extraBaseBoard: XMLElement?)?
        for element in reader.children(root, "sysinfo") {
            let type = try reader.requiredAttribute(element, "type")
            switch type {
            case "smbios":
                if smbios != nil {
                    throw reader.unsupported(element, "a second <sysinfo type='smbios'> (libvirt would use only the first)")
                }
                smbios = try parseSMBIOS(element, uuid: &uuid, uuidGenerated: uuidGenerated)
            case "fwcfg":
                continue  // parseFirmwareConfig
            default:
                throw reader.error(element, "unknown sysinfo type '\(type)' (smbios or fwcfg)")
            }
        }
        guard let os = root.firstElement(named: "os"), let element = try reader.child(os, "smbios") else { return nil }
        let mode = try reader.requiredAttribute(element, "mode")
        switch mode {
        case "emulate":
            return nil  // QEMU's own tables, as without <smbios>
        case "host":
            throw reader.unsupported(
                element,
                "<smbios mode='host'> copies the host's own SMBIOS tables, which libvirt reads with dmidecode; use mode='sysinfo' with the values in a <sysinfo type='smbios'> element")
        case "sysinfo":
            guard let smbios else {
                throw reader.error(element, "mode='sysinfo' needs a <sysinfo type='smbios'> element in the domain")
            }
            if let board = smbios.extraBaseBoard {
                throw reader.error(
                    board, "a second <baseBoard>: qemu does not support more than one entry to Type 2 in SMBIOS table",
                    code: .unsupported)
            }
            return smbios.sysinfo
        default:
            throw reader.error(element, "mode='\(mode)' must be emulate, host or sysinfo")
        }
    }

    /// `<sysinfo type='fwcfg'>` entries, in document order: QEMU's
    /// `-fw_cfg` files, which the guest reads from the firmware configuration
    /// device (Ignition, cloud-init and the like). libvirt's rules: a name
    /// under opt/, not under QEMU's or OVMF's reserved opt/org.qemu/ and
    /// opt/ovmf/, a value or a file; QEMU's: at most 55 characters, each name
    /// once.
    func parseFirmwareConfig(_ root: XMLElement) throws -> [DomainSpec.FirmwareConfigEntry] {
        var entries: [DomainSpec.FirmwareConfigEntry] = []
        for sysinfo in reader.children(root, "sysinfo") where reader.attribute(sysinfo, "type") == "fwcfg" {
            for element in reader.children(sysinfo, "entry") {
                let name = try reader.requiredAttribute(element, "name")
                guard name.hasPrefix("opt/") else {
                    throw reader.error(element, "fw_cfg name '\(name)' must start with opt/ (the rest belongs to QEMU)")
                }
                if name.hasPrefix("opt/ovmf/") || name.hasPrefix("opt/org.qemu/") {
                    throw reader.error(element, "fw_cfg name '\(name)' is reserved for OVMF or QEMU; choose a name of your own under opt/")
                }
                guard name.utf8.count <= 55 else {
                    throw reader.error(element, "fw_cfg name '\(name)' is \(name.utf8.count) bytes; QEMU allows at most 55")
                }
                guard !entries.contains(where: { $0.name == name }) else {
                    throw reader.error(element, "fw_cfg name '\(name)' is given twice; each entry needs its own name")
                }
                let value = element.text.trimmingWhitespace()
                let content: DomainSpec.FirmwareConfigEntry.Content
                switch (reader.attribute(element, "file"), value.isEmpty) {
                case (let file?, true):
                    guard file.hasPrefix("/") else {
                        throw reader.error(element, "file='\(file)' must be an absolute path")
                    }
                    content = .file(file)
                case (nil, false):
                    content = .string(element.text)
                case (_?, false):
                    throw reader.error(element, "fw_cfg entry '\(name)' has both a value and file=; give one")
                case (nil, true):
                    throw reader.error(element, "fw_cfg entry '\(name)' needs a value or file=")
                }
                entries.append(.init(name: name, content: content))
            }
        }
        return entries
    }

    /// One `<sysinfo type='smbios'>`. Tables whose entries are all absent or
    /// empty count as absent, as in libvirt; so do empty baseBoards. Returns
    /// the second non-empty `<baseBoard>` too: libvirt refuses it, but only
    /// when the tables are used.
    private func parseSMBIOS(_ element: XMLElement, uuid: inout DomainUUID, uuidGenerated: Bool) throws
        -> (sysinfo: DomainSpec.Sysinfo, extraBaseBoard: XMLElement?)
    {
        var sysinfo = DomainSpec.Sysinfo()
        if let bios = try reader.child(element, "bios") {
            let entries = try sysinfoEntries(bios, ["vendor", "version", "date", "release"])
            let table = DomainSpec.Sysinfo.BIOS(
                vendor: entryValue(entries, "vendor"), version: entryValue(entries, "version"),
                date: entryValue(entries, "date"), release: entryValue(entries, "release"))
            if let date = table.date, !DomainParser.isBIOSDate(date) {
                throw reader.error(entries["date"] ?? bios, "Invalid BIOS 'date' format '\(date)': use mm/dd/yy or mm/dd/yyyy")
            }
            if let release = table.release, !DomainParser.isBIOSRelease(release) {
                throw reader.error(
                    entries["release"] ?? bios,
                    "BIOS release '\(release)' must be major.minor, each 0–255 (SMBIOS stores them as bytes; QEMU refuses other forms)")
            }
            if table != DomainSpec.Sysinfo.BIOS() { sysinfo.bios = table }
        }
        if let system = try reader.child(element, "system") {
            let entries = try sysinfoEntries(system, ["manufacturer", "product", "version", "serial", "uuid", "sku", "family"])
            var table = DomainSpec.Sysinfo.System(
                manufacturer: entryValue(entries, "manufacturer"), product: entryValue(entries, "product"),
                version: entryValue(entries, "version"), serial: entryValue(entries, "serial"), uuid: nil,
                sku: entryValue(entries, "sku"), family: entryValue(entries, "family"))
            if let text = entryValue(entries, "uuid") {
                let entry = entries["uuid"] ?? system
                guard let parsed = DomainUUID(text) else {
                    throw reader.error(entry, "malformed <sysinfo> uuid element '\(text)'")
                }
                if uuidGenerated {
                    uuid = parsed
                } else if parsed != uuid {
                    throw reader.error(
                        entry, "UUID mismatch between <uuid> and <sysinfo>: the system uuid \(parsed) must equal the domain's \(uuid)")
                }
                table.uuid = parsed
            }
            if table != DomainSpec.Sysinfo.System() { sysinfo.system = table }
        }
        var extraBaseBoard: XMLElement?
        for board in reader.children(element, "baseBoard") {
            let entries = try sysinfoEntries(board, ["manufacturer", "product", "version", "serial", "asset", "location"])
            let table = DomainSpec.Sysinfo.BaseBoard(
                manufacturer: entryValue(entries, "manufacturer"), product: entryValue(entries, "product"),
                version: entryValue(entries, "version"), serial: entryValue(entries, "serial"),
                asset: entryValue(entries, "asset"), location: entryValue(entries, "location"))
            guard table != DomainSpec.Sysinfo.BaseBoard() else { continue }
            if sysinfo.baseBoard == nil {
                sysinfo.baseBoard = table
            } else if extraBaseBoard == nil {
                extraBaseBoard = board
            }
        }
        if let chassis = try reader.child(element, "chassis") {
            let entries = try sysinfoEntries(chassis, ["manufacturer", "version", "serial", "asset", "sku"])
            let table = DomainSpec.Sysinfo.Chassis(
                manufacturer: entryValue(entries, "manufacturer"), version: entryValue(entries, "version"),
                serial: entryValue(entries, "serial"), asset: entryValue(entries, "asset"), sku: entryValue(entries, "sku"))
            if table != DomainSpec.Sysinfo.Chassis() { sysinfo.chassis = table }
        }
        if let oem = try reader.child(element, "oemStrings") {
            // Every entry counts, empty ones too (libvirt keeps them).
            sysinfo.oemStrings = reader.children(oem, "entry").map(\.text)
        }
        return (sysinfo, extraBaseBoard)
    }

    /// The `<entry name=…>` children of one table, by name. libvirt's schema
    /// allows only `names`; its parser would silently keep the first of a
    /// repeated name, so vmshim refuses the repeat.
    private func sysinfoEntries(_ table: XMLElement, _ names: [String]) throws -> [String: XMLElement] {
        var found: [String: XMLElement] = [:]
        for entry in reader.children(table, "entry") {
            let name = try reader.requiredAttribute(entry, "name")
            guard names.contains(name) else {
                throw reader.error(entry, "unknown <\(table.name)> entry name='\(name)' (known: \(names.joined(separator: ", ")))")
            }
            guard found[name] == nil else {
                throw reader.error(entry, "<\(table.name)> entry name='\(name)' is repeated")
            }
            found[name] = entry
        }
        return found
    }

    /// The text as libvirt reads it (not trimmed); empty counts as absent.
    private func entryValue(_ entries: [String: XMLElement], _ name: String) -> String? {
        guard let text = entries[name]?.text, !text.isEmpty else { return nil }
        return text
    }

    /// libvirt's check of a BIOS date: mm/dd/yy or mm/dd/yyyy, each number
    /// read like strtol (leading blanks and a sign allowed), month 1–12, day
    /// 1–31, year 0–99 or from 1900.
    static func isBIOSDate(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var index = 0
        func number() -> Int? {
            var i = index
            while i < bytes.count, [9, 10, 11, 12, 13, 32].contains(bytes[i]) { i += 1 }
            var negative = false
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
                negative = bytes[i] == UInt8(ascii: "-")
                i += 1
            }
            let start = i
            var value = 0
            while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") {
                value = value * 10 + Int(bytes[i] - UInt8(ascii: "0"))
                guard value <= Int(Int32.max) + 1 else { return nil }  // beyond an int: strtol's ERANGE
                i += 1
            }
            guard i > start else { return nil }
            let signed = negative ? -value : value
            guard signed >= Int(Int32.min), signed <= Int(Int32.max) else { return nil }
            index = i
            return signed
        }
        let slash = UInt8(ascii: "/")
        guard let month = number(), index < bytes.count, bytes[index] == slash else { return false }
        index += 1
        guard let day = number(), index < bytes.count, bytes[index] == slash else { return false }
        index += 1
        guard let year = number(), index == bytes.count else { return false }
        return (1...12).contains(month) && (1...31).contains(day) && ((0...99).contains(year) || year >= 1900)
    }

    /// `major.minor`, decimal, each 0–255: what QEMU's `-smbios type=0,release=`
    /// stores (it refuses a value without the two numbers).
    static func isBIOSRelease(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 2
            && parts.allSatisfy { part in
                !part.isEmpty && part.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
                    && (Int(part).map { $0 <= 255 } ?? false)
            }
    }
}
