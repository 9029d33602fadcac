/// `-smbios` options as libvirt 9.0 writes them for `<smbios mode='sysinfo'/>`
/// (qemuBuildSmbiosCommandLine): types 0, 1, 2, 3 and 11 in that order, right
/// after `-uuid`, every value comma-escaped.
extension QEMUCommandLine {
    mutating func addSMBIOS() {
        for table in QEMUCommandLine.smbiosTables(spec.sysinfo) { add("-smbios", table) }
        // libvirt writes the fw_cfg entries right after the SMBIOS tables.
        for entry in spec.firmwareConfig {
            switch entry.content {
            case .string(let value): add("-fw_cfg", "name=\(QEMUOption.escape(entry.name)),string=\(QEMUOption.escape(value))")
            case .file(let path): add("-fw_cfg", "name=\(QEMUOption.escape(entry.name)),file=\(QEMUOption.escape(path))")
            }
        }
    }

    static func smbiosTables(_ sysinfo: DomainSpec.Sysinfo?) -> [String] {
        guard let sysinfo else { return [] }
        /// "type=N" and the fields that have a value, in the given order.
        func table(_ type: Int, _ fields: [(String, String?)]) -> String {
            "type=\(type)" + fields.compactMap { field in field.1.map { ",\(field.0)=\(QEMUOption.escape($0))" } }.joined()
        }
        var tables: [String] = []
        if let bios = sysinfo.bios {
            tables.append(table(0, [("vendor", bios.vendor), ("version", bios.version), ("date", bios.date), ("release", bios.release)]))
        }
        if let system = sysinfo.system {
            tables.append(
                table(
                    1,
                    [
                        ("manufacturer", system.manufacturer), ("product", system.product), ("version", system.version),
                        ("serial", system.serial), ("uuid", system.uuid?.description), ("sku", system.sku),
                        ("family", system.family),
                    ]))
        }
        // libvirt writes the manufacturer of types 2 and 3 even when it is not set.
        if let board = sysinfo.baseBoard {
            tables.append(
                table(
                    2,
                    [
                        ("manufacturer", board.manufacturer ?? ""), ("product", board.product), ("version", board.version),
                        ("serial", board.serial), ("asset", board.asset), ("location", board.location),
                    ]))
        }
        if let chassis = sysinfo.chassis {
            tables.append(
                table(
                    3,
                    [
                        ("manufacturer", chassis.manufacturer ?? ""), ("version", chassis.version), ("serial", chassis.serial),
                        ("asset", chassis.asset), ("sku", chassis.sku),
                    ]))
        }
        if !sysinfo.oemStrings.isEmpty {
            tables.append("type=11" + sysinfo.oemStrings.map { ",value=\(QEMUOption.escape($0))" }.joined())
        }
        return tables
    }
}
