#if canImport(Glibc)
import Glibc
#endif

/// QEMU's firmware descriptors (docs/interop/firmware.json), which libvirt reads
/// to fill in `<os firmware='efi'>`: Debian's `ovmf` installs them in
/// /usr/share/qemu/firmware. Only what selection needs is read.
public struct FirmwareDescriptor: Sendable, Equatable {
    /// The file's name: descriptors are tried in this order.
    public var name: String
    public var interfaceTypes: [String]
    public var executable: String
    public var nvramTemplate: String?
    /// Globs over machine types, for x86_64.
    public var machines: [String]
    public var features: [String]

    public init(
        name: String, interfaceTypes: [String], executable: String, nvramTemplate: String?, machines: [String],
        features: [String]
    ) {
        self.name = name
        self.interfaceTypes = interfaceTypes
        self.executable = executable
        self.nvramTemplate = nvramTemplate
        self.machines = machines
        self.features = features
    }

    /// libvirt's search path for the system instance: a file in /etc replaces
    /// the one of the same name in /usr/share.
    public static let searchDirectories = ["/etc/qemu/firmware", "/usr/share/qemu/firmware"]

    /// Every readable x86_64 pflash descriptor, by file name. Unreadable or
    /// foreign ones are skipped, as libvirt skips them.
    public static func loadSystem(directories: [String] = searchDirectories) -> [FirmwareDescriptor] {
        var chosen: [String: String] = [:]
        for directory in directories.reversed() {
            for file in FileIO.listDirectory(directory) where file.hasSuffix(".json") {
                chosen[file] = directory + "/" + file
            }
        }
        return chosen.keys.sorted().compactMap { name in
            guard let path = chosen[name], let text = try? FileIO.readString(path) else { return nil }
            return parse(name: name, text)
        }
    }

    static func parse(name: String, _ text: String) -> FirmwareDescriptor? {
        guard let json = try? JSONValue.parse(text), let mapping = json["mapping"],
            mapping["device"]?.stringValue == "flash",
            let executable = mapping["executable"]?["filename"]?.stringValue,
            (mapping["executable"]?["format"]?.stringValue ?? "raw") == "raw"
        else { return nil }
        let machines = (json["targets"]?.arrayValue ?? [])
            .filter { $0["architecture"]?.stringValue == "x86_64" }
            .flatMap { $0["machines"]?.arrayValue ?? [] }
            .compactMap(\.stringValue)
        guard !machines.isEmpty else { return nil }
        return FirmwareDescriptor(
            name: name, interfaceTypes: (json["interface-types"]?.arrayValue ?? []).compactMap(\.stringValue),
            executable: executable, nvramTemplate: mapping["nvram-template"]?["filename"]?.stringValue, machines: machines,
            features: (json["features"]?.arrayValue ?? []).compactMap(\.stringValue))
    }

    /// Whether it serves this machine type. Aliases are matched as the
    /// versioned types libvirt expands them to.
    public func serves(machine: String) -> Bool {
        let canonical = machine == "pc" ? "pc-i440fx-" : machine == "q35" ? "pc-q35-" : machine
        return machines.contains { glob in
            fnmatch(glob, canonical, 0) == 0
        }
    }

    /// libvirt's qemuFirmwareMatchDomain for the cases vmshim supports: UEFI,
    /// the machine, the wanted features on or off. (SMM switched off does not
    /// rule out a firmware that needs it: libvirt picks it and then refuses.)
    public func matches(_ firmware: DomainSpec.Firmware, machine: String) -> Bool {
        guard interfaceTypes.contains("uefi"), serves(machine: machine) else { return false }
        for (feature, wanted) in firmware.wantedFeatures where features.contains(feature) != wanted {
            return false
        }
        if let secure = firmware.secure, features.contains("secure-boot") != secure { return false }
        return true
    }
}
