/// Parses libvirt domain XML into a `DomainSpec`.
///
/// Element and attribute names follow libvirt's schema; values are checked the
/// way libvirt's parser checks them. Whatever this parser does not understand
/// is refused, listing every unsupported element and attribute with its line,
/// before anything is started.
public struct DomainParser {
    public let file: String
    let reader: ElementReader

    public init(file: String) {
        self.file = file
        self.reader = ElementReader(file: file)
    }

    /// The result: the model and the document it came from (kept to write the
    /// live definition without losing anything the user wrote).
    public struct Parsed {
        public var spec: DomainSpec
        public var document: XMLElement
    }

    public func parse(_ text: String) throws -> Parsed {
        let root = try XMLTree.parse(text, file: file)
        let spec = try parse(root: root)
        let problems = reader.leftovers(in: root)
        if !problems.isEmpty {
            throw ShimError(
                .unsupported,
                problems.joined(separator: "\n")
                    + "\n\(file): remove or change the \(problems.count == 1 ? "item" : "items") above; vmshim refuses what it cannot honour rather than dropping it"
            )
        }
        return Parsed(spec: spec, document: root)
    }

    func parse(root: XMLElement) throws -> DomainSpec {
        guard root.name == "domain", root.namespaceURI == nil else {
            throw reader.error(root, "the root element must be <domain>")
        }
        root.consumed = true
        let virtTypeRaw = try reader.requiredAttribute(root, "type")
        guard let virtType = DomainSpec.VirtType(rawValue: virtTypeRaw) else {
            throw reader.unsupported(root, "domain type '\(virtTypeRaw)' (vmshim runs type='qemu' and type='kvm')")
        }
        reader.ignoreAttributes(root, "id")  // runtime id of a running libvirt domain: output only

        guard let name = try reader.childText(root, "name"), !name.isEmpty else {
            throw reader.error(root, "missing <name>")
        }
        try validateName(name, root.firstElement(named: "name") ?? root)

        var uuid = DomainUUID.random()
        if let uuidElement = try reader.child(root, "uuid") {
            guard let parsed = DomainUUID(uuidElement.text) else {
                throw reader.error(uuidElement, "'\(uuidElement.text.trimmingWhitespace())' is not a valid UUID")
            }
            uuid = parsed
        }

        // <genid> is not informational: it is a guest-visible vmgenid device,
        // so it is refused (unread) until vmshim creates one.
        for informational in ["title", "description", "metadata"] {
            if let element = try reader.child(root, informational) { reader.ignoreSubtree(element) }
        }

        var memory = try parseMemory(root)
        let vcpus = try parseVCPUs(root)
        let os = try parseOS(root, virtType: virtType)
        let features = try parseFeatures(root)
        let cpu = try parseCPU(root, vcpus: vcpus)
        if !cpu.numaCells.isEmpty {
            // libvirt: with NUMA cells, the guest's memory is their sum.
            memory.maximumKiB = cpu.numaCells.reduce(0) { $0 + $1.memoryKiB }
            memory.currentKiB = min(memory.currentKiB, memory.maximumKiB)
        }
        let clock = try parseClock(root)
        let lifecycle = try parseLifecycle(root)
        let power = try parsePower(root)
        let registerCgroup = try parseResource(root)
        let tuning = try parseTuning(root)
        try parseSecurityLabels(root)

        // Like libvirt, a domain without <devices> or <emulator> gets the
        // default emulator for its architecture.
        var emulator = "/usr/bin/qemu-system-\(os.arch)"
        var devices = DomainSpec.Devices()
        if let devicesElement = try reader.child(root, "devices") {
            if let named = try reader.childText(devicesElement, "emulator") {
                guard named.hasPrefix("/") else {
                    throw reader.error(devicesElement, "<emulator> must be an absolute path, not '\(named)'")
                }
                emulator = named
            }
            devices = try parseDevices(devicesElement, os: os)
            if let iommu = devices.iommu, iommu.interruptRemapping == true, let element = devicesElement.firstElement(named: "iommu") {
                // libvirt's checks (qemu_validate.c); QEMU's own for eim.
                guard features.ioapicDriver == "qemu" else {
                    throw reader.error(element, "IOMMU interrupt remapping requires split I/O APIC: add <ioapic driver='qemu'/> to <features>")
                }
                if iommu.extendedInterruptMode == true, virtType != .kvm {
                    throw reader.unsupported(element, "iommu eim='on' with type='qemu' (QEMU needs KVM's split irqchip for it)")
                }
            }
        }

        var spec = DomainSpec(
            virtType: virtType, name: name, uuid: uuid, memory: memory, vcpus: vcpus, cpu: cpu, os: os,
            features: features, clock: clock, lifecycle: lifecycle, power: power, emulator: emulator,
            devices: devices)
        spec.registerCgroup = registerCgroup
        spec.tuning = tuning
        spec.sysinfo = try parseSysinfo(root, uuid: &spec.uuid)
        spec.firmwareConfig = try parseFirmwareConfig(root)
        spec.iothreadIDs = try parseIOThreads(root)
        spec.pinning = try parsePinning(root, vcpus: vcpus.maximum, iothreads: spec.iothreadIDs)
        spec.numaTune = try parseNUMATune(root, cells: cpu.numaCells.map(\.id), memoryDevices: !devices.memoryDevices.isEmpty)
        spec.memoryBacking = try parseMemoryBacking(root, numa: !cpu.numaCells.isEmpty)
        if !registerCgroup, !tuning.isEmpty, let element = try reader.child(root, "resource") {
            throw reader.error(
                element,
                "register='none' keeps QEMU in the caller's cgroup, so vmshim cannot apply <memtune>, <cputune> or <blkiotune>; set the limits on the caller's cgroup and remove them here, or drop register='none'")
        }
        try validateBootOrder(&spec, root: root)
        try validateMemoryDevices(&spec, root: root)
        return spec
    }

    // MARK: - Name

    func validateName(_ name: String, _ element: XMLElement) throws {
        // libvirt refuses '/' in names; vmshim also uses the name as a directory
        // and cgroup name, so it refuses what those cannot hold.
        if name.contains("/") { throw reader.error(element, "domain name '\(name)' must not contain '/'") }
        if name == "." || name == ".." { throw reader.error(element, "domain name '\(name)' is not allowed") }
        if name.utf8.count > 200 { throw reader.error(element, "domain name is longer than 200 bytes") }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw reader.error(element, "domain name must not contain control characters")
        }
    }

    // MARK: - Memory and CPUs

    /// Scales a libvirt `unit` to KiB, rounding up like libvirt's virScaleInteger.
    func kibibytes(_ element: XMLElement, defaultUnit: String = "KiB") throws -> UInt64 {
        let text = element.text.trimmingWhitespace()
        guard let value = UInt64(text) else {
            throw reader.error(element, "'\(text)' is not a non-negative integer")
        }
        let unit = reader.attribute(element, "unit") ?? defaultUnit
        guard Self.bytesPerUnit(unit) != nil else {
            throw reader.error(element, "unknown unit '\(unit)' (use b, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")
        }
        guard let kib = Self.kibibytes(value, unit: unit) else { throw reader.error(element, "value \(value) \(unit) is too large") }
        return kib
    }

    static func bytesPerUnit(_ unit: String) -> UInt64? {
        switch unit {
        case "b", "byte", "bytes": return 1
        case "KB": return 1000
        case "k", "K", "KiB": return 1024
        case "MB": return 1_000_000
        case "M", "MiB": return 1 << 20
        case "GB": return 1_000_000_000
        case "G", "GiB": return 1 << 30
        case "TB": return 1_000_000_000_000
        case "T", "TiB": return 1 << 40
        case "PB": return 1_000_000_000_000_000
        case "P", "PiB": return 1 << 50
        default: return nil
        }
    }

    /// An amount in a libvirt unit, in KiB rounded up; nil for an unknown unit or an overflow.
    static func kibibytes(_ value: UInt64, unit: String) -> UInt64? {
        guard let perUnit = bytesPerUnit(unit) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: perUnit)
        guard !overflow else { return nil }
        return bytes / 1024 + (bytes % 1024 == 0 ? 0 : 1)
    }

    func parseMemory(_ root: XMLElement) throws -> DomainSpec.Memory {
        guard let memoryElement = try reader.child(root, "memory") else {
            throw reader.error(root, "missing <memory>")
        }
        reader.ignoreAttributes(memoryElement, "dumpCore")
        let maximum = try kibibytes(memoryElement)
        guard maximum >= 1024 else { throw reader.error(memoryElement, "guest memory must be at least 1 MiB") }
        var current = maximum
        if let currentElement = try reader.child(root, "currentMemory") {
            current = try kibibytes(currentElement)
            guard current > 0 else { throw reader.error(currentElement, "currentMemory must be above zero") }
            // libvirt clamps currentMemory to memory.
            current = min(current, maximum)
        }
        var memory = DomainSpec.Memory(maximumKiB: maximum, currentKiB: current)
        if let maxElement = try reader.child(root, "maxMemory") {
            let slots = try reader.intAttribute(maxElement, "slots", range: 0...255) ?? 0
            // libvirt aligns it to 1 MiB on x86.
            let maxKiB = (try kibibytes(maxElement) + 1023) / 1024 * 1024
            memory.hotplug = DomainSpec.Memory.Hotplug(maximumKiB: maxKiB, slots: slots)
        }
        return memory
    }

    /// Memory hotplug as libvirt 9.0 checks it at define and start time:
    /// NUMA cells, a node per device, slots for DIMMs, room under
    /// `<maxMemory>`; then `<memory>` becomes boot memory plus the devices
    /// and `<currentMemory>` (the balloon target) defaults to that.
    func validateMemoryDevices(_ spec: inout DomainSpec, root: XMLElement) throws {
        let devices = spec.devices.memoryDevices
        let maxElement = root.firstElement(named: "maxMemory") ?? root
        guard let hotplug = spec.memory.hotplug else {
            if let first = devices.first {
                throw ShimError.afterParsing(
                    file: reader.file, line: first.xmlLine,
                    "<memory model='\(first.model.rawValue)'>: a memory device needs <maxMemory slots=…> (the memory hotplug space)")
            }
            return
        }
        guard !spec.cpu.numaCells.isEmpty else {
            throw reader.error(maxElement, "at least one NUMA cell (<cpu><numa><cell>) has to be configured when enabling memory hotplug")
        }
        let backing = spec.memoryBacking
        if !devices.isEmpty,
            backing.memfd || backing.sharedAccess != nil || backing.preallocate || backing.hugepages
                || spec.cpu.numaCells.contains(where: { $0.memAccessShared != nil })
        {
            throw reader.error(
                root.firstElement(named: "memoryBacking") ?? root,
                "memory devices with memfd, an access mode, preallocated or huge page <memoryBacking> (or NUMA memAccess) are not supported yet; drop one or the other",
                code: .unsupported)
        }
        var slotsUsed = Set<Int>()
        for device in devices where device.model == .dimm {
            if let slot = device.slot {
                guard slot < hotplug.slots else {
                    throw ShimError.afterParsing(
                        file: reader.file, line: device.xmlLine, "DIMM slot \(slot) is not below <maxMemory slots='\(hotplug.slots)'>")
                }
                guard slotsUsed.insert(slot).inserted else {
                    throw ShimError.afterParsing(file: reader.file, line: device.xmlLine, "two DIMMs use slot \(slot)")
                }
            }
        }
        let dimms = devices.filter { $0.model == .dimm }.count
        if dimms > hotplug.slots {
            throw reader.error(
                maxElement, "\(dimms) DIMMs need more memory slots than <maxMemory slots='\(hotplug.slots)'> gives; raise slots")
        }
        if dimms > 0, !spec.features.acpi {
            throw reader.error(
                root.firstElement(named: "features") ?? root, "DIMMs are hot-pluggable through ACPI: add <features><acpi/></features>")
        }
        var total: UInt64 = 0
        let space = hotplug.maximumKiB > spec.memory.maximumKiB ? hotplug.maximumKiB - spec.memory.maximumKiB : 0
        for index in spec.devices.memoryDevices.indices {
            let device = spec.devices.memoryDevices[index]
            guard spec.cpu.numaCells.contains(where: { $0.id == device.node }) else {
                throw ShimError.afterParsing(
                    file: reader.file, line: device.xmlLine,
                    "<memory model='\(device.model.rawValue)'>: NUMA node \(device.node) is not a <cell id> of <cpu><numa>")
            }
            if device.model == .dimm, device.slot == nil {
                // The first free slot, in document order, as libvirt assigns them.
                let free = (0..<hotplug.slots).first { !slotsUsed.contains($0) } ?? 0
                slotsUsed.insert(free)
                spec.devices.memoryDevices[index].slot = free
            }
            // Checked device by device: sizes come from the document and must not overflow.
            guard device.sizeKiB <= space - total else {
                throw ShimError.afterParsing(
                    file: reader.file, line: device.xmlLine,
                    "<memory model='\(device.model.rawValue)'>: boot memory (\(spec.memory.maximumKiB) KiB) plus the memory devices up to this one exceed <maxMemory> (\(hotplug.maximumKiB) KiB); raise <maxMemory> or make the devices smaller")
            }
            total += device.sizeKiB
        }
        spec.memory.devicesKiB = total
        // The NUMA sum clamped <currentMemory> to boot memory; with devices, libvirt's bound is the total.
        let declared = try root.firstElement(named: "currentMemory").map { try kibibytes($0) }
        spec.memory.currentKiB = min(declared ?? spec.memory.totalKiB, spec.memory.totalKiB)
    }

    func parseVCPUs(_ root: XMLElement) throws -> DomainSpec.VCPUs {
        guard let element = try reader.child(root, "vcpu") else {
            return DomainSpec.VCPUs(maximum: 1, current: 1, cpuset: nil)
        }
        let text = element.text.trimmingWhitespace()
        guard let maximum = Int(text), maximum >= 1 else {
            throw reader.error(element, "'\(text)' is not a positive vCPU count")
        }
        guard maximum <= 288 else { throw reader.error(element, "\(maximum) vCPUs is above QEMU's x86 limit of 288") }
        let current = try reader.intAttribute(element, "current") ?? maximum
        guard current >= 1, current <= maximum else {
            throw reader.error(element, "current='\(current)' must be between 1 and the maximum \(maximum)")
        }
        if let placement = reader.attribute(element, "placement"), placement != "static" {
            throw reader.unsupported(element, "placement='\(placement)' (only 'static')")
        }
        var vcpus = DomainSpec.VCPUs(maximum: maximum, current: current, cpuset: nil)
        if let cpuset = reader.attribute(element, "cpuset") {
            guard let cpus = Self.parseCPUSet(cpuset) else {
                throw reader.error(element, "cpuset='\(cpuset)' is not a CPU list like '0-3,^2,6' (CPUs 0–8191)")
            }
            vcpus.cpuset = cpuset
            vcpus.cpusetCPUs = cpus
        }
        return vcpus
    }

    /// libvirt's virBitmapParse syntax: `N`, `N-M`, `^N` (excluded), comma separated.
    /// nil when malformed, out of 0…8191, or empty once exclusions apply.
    static func parseCPUSet(_ text: String) -> [Int]? {
        var included = Set<Int>()
        var excluded = Set<Int>()
        for rawItem in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = String(rawItem).trimmingWhitespace()
            if item.hasPrefix("^") {
                guard let cpu = Int(item.dropFirst()), (0...8191).contains(cpu) else { return nil }
                excluded.insert(cpu)
            } else if let dash = item.firstIndex(of: "-") {
                guard let low = Int(item[..<dash]), let high = Int(item[item.index(after: dash)...]),
                    low <= high, (0...8191).contains(low), (0...8191).contains(high)
                else { return nil }
                included.formUnion(low...high)
            } else {
                guard let cpu = Int(item), (0...8191).contains(cpu) else { return nil }
                included.insert(cpu)
            }
        }
        let cpus = included.subtracting(excluded).sorted()
        return cpus.isEmpty ? nil : cpus
    }

    /// `<cpu><numa>`: cells with ids 0…n-1 in order, disjoint vCPU lists within
    /// the maximum, and distances 10…255, as libvirt checks them.
    func parseNUMA(_ cpuElement: XMLElement, vcpus: DomainSpec.VCPUs) throws -> [DomainSpec.CPU.NUMACell] {
        guard let numa = try reader.child(cpuElement, "numa") else { return [] }
        var cells: [DomainSpec.CPU.NUMACell] = []
        var assigned = Set<Int>()
        for element in reader.children(numa, "cell") {
            let id = try reader.intAttribute(element, "id", range: 0...255) ?? cells.count
            guard id == cells.count else { throw reader.error(element, "NUMA cell id \(id) is out of order: cells go 0, 1, 2, … (libvirt refuses it too)") }
            let cpusText = try reader.requiredAttribute(element, "cpus")
            guard let cpus = Self.parseCPUSet(cpusText) else { throw reader.error(element, "cpus='\(cpusText)' is not a CPU list") }
            if let outside = cpus.first(where: { $0 >= vcpus.maximum }) {
                throw reader.error(element, "vCPU \(outside) is beyond the \(vcpus.maximum) vCPUs")
            }
            if let shared = cpus.first(where: { assigned.contains($0) }) {
                throw reader.error(element, "vCPU \(shared) is in more than one NUMA cell")
            }
            assigned.formUnion(cpus)
            let memoryText = try reader.requiredAttribute(element, "memory")
            guard let amount = UInt64(memoryText), amount > 0 else { throw reader.error(element, "memory='\(memoryText)' must be a positive number") }
            let unit = reader.attribute(element, "unit") ?? "KiB"
            guard let kib = Self.kibibytes(amount, unit: unit) else { throw reader.error(element, "memory unit '\(unit)' is unknown or the amount too large") }
            var memAccess: Bool?
            if let access = reader.attribute(element, "memAccess") {
                guard access == "shared" || access == "private" else {
                    throw reader.error(element, "memAccess='\(access)' must be shared or private")
                }
                memAccess = access == "shared"
            }
            if element.attribute("discard") != nil { throw reader.unsupported(element, "NUMA cell discard") }
            var cell = DomainSpec.CPU.NUMACell(id: id, cpus: cpus, memoryKiB: (kib + 1023) / 1024 * 1024)
            cell.memAccessShared = memAccess
            if let distances = try reader.child(element, "distances") {
                for sibling in reader.children(distances, "sibling") {
                    guard let other = try reader.intAttribute(sibling, "id", range: 0...255),
                        let value = try reader.intAttribute(sibling, "value", range: 10...255)
                    else { throw reader.error(sibling, "a <sibling> needs id and value (10 to 255)") }
                    if other == id, value != 10 { throw reader.error(sibling, "a cell's distance to itself is 10") }
                    cell.distances[other] = value
                }
            }
            cells.append(cell)
        }
        for cell in cells {
            if let unknown = cell.distances.keys.first(where: { $0 >= cells.count }) {
                throw reader.error(numa, "cell \(cell.id) names a distance to cell \(unknown), which does not exist")
            }
        }
        return cells
    }

    func parseCPU(_ root: XMLElement, vcpus: DomainSpec.VCPUs) throws -> DomainSpec.CPU {
        var cpu = DomainSpec.CPU(mode: .custom, model: nil, features: [], topology: nil)
        guard let element = try reader.child(root, "cpu") else { return cpu }
        if let mode = try reader.enumAttribute(element, "mode", DomainSpec.CPU.Mode.self) { cpu.mode = mode }
        // match/check/migratable govern how libvirt compares with the host CPU;
        // they do not change what the guest sees.
        if let match = reader.attribute(element, "match"), !["minimum", "exact", "strict"].contains(match) {
            throw reader.error(element, "match='\(match)' must be minimum, exact or strict")
        }
        if let check = reader.attribute(element, "check"), !["none", "partial", "full"].contains(check) {
            throw reader.error(element, "check='\(check)' must be none, partial or full")
        }
        _ = try reader.boolAttribute(element, "migratable")
        if let model = try reader.child(element, "model") {
            let name = model.text.trimmingWhitespace()
            // virt-manager writes <model fallback='allow'/> under host-model.
            guard !name.isEmpty || cpu.mode == .hostModel else { throw reader.error(model, "empty CPU model name") }
            if let fallback = reader.attribute(model, "fallback"), !["allow", "forbid"].contains(fallback) {
                throw reader.error(model, "fallback='\(fallback)' must be allow or forbid")
            }
            if reader.attribute(model, "vendor_id") != nil {
                throw reader.unsupported(model, "vendor_id")
            }
            cpu.model = name
        }
        if let vendor = try reader.child(element, "vendor") {
            let name = vendor.text.trimmingWhitespace()
            cpu.vendor = name.isEmpty ? nil : name
        }
        for feature in reader.children(element, "feature") {
            let name = try reader.requiredAttribute(feature, "name")
            let policy = try reader.enumAttribute(feature, "policy", DomainSpec.CPU.FeaturePolicy.self) ?? .require
            cpu.features.append(DomainSpec.CPU.Feature(name: name, policy: policy))
        }
        if let topology = try reader.child(element, "topology") {
            let sockets = try reader.intAttribute(topology, "sockets", range: 1...4096) ?? 1
            let dies = try reader.intAttribute(topology, "dies", range: 1...4096) ?? 1
            let clusters = try reader.intAttribute(topology, "clusters", range: 1...1) ?? 1
            _ = clusters
            let cores = try reader.intAttribute(topology, "cores", range: 1...4096) ?? 1
            let threads = try reader.intAttribute(topology, "threads", range: 1...4096) ?? 1
            let value = DomainSpec.CPU.Topology(sockets: sockets, dies: dies, cores: cores, threads: threads)
            guard value.total == vcpus.maximum else {
                throw reader.error(
                    topology,
                    "sockets×dies×cores×threads = \(value.total) must equal the maximum vCPU count \(vcpus.maximum)")
            }
            cpu.topology = value
        }
        cpu.numaCells = try parseNUMA(element, vcpus: vcpus)
        switch cpu.mode {
        case .custom:
            break
        case .hostModel:
            // Expanded at start from what QEMU reports (HostCPUModel); libvirt
            // ignores a model name here and keeps only the fallback.
            cpu.model = nil
            cpu.vendor = nil
        case .hostPassthrough, .maximum:
            if cpu.model != nil {
                throw reader.error(element, "a <model> is not allowed with mode='\(cpu.mode.rawValue)'")
            }
        }
        return cpu
    }

    // MARK: - OS

    func parseOS(_ root: XMLElement, virtType: DomainSpec.VirtType) throws -> DomainSpec.OS {
        guard let element = try reader.child(root, "os") else { throw reader.error(root, "missing <os>") }
        var firmware: DomainSpec.Firmware?
        switch reader.attribute(element, "firmware") {
        case nil, "bios"?: break
        case "efi"?: firmware = DomainSpec.Firmware(autoselect: true)
        case let other?: throw reader.error(element, "firmware='\(other)' must be efi or bios")
        }
        guard let type = try reader.child(element, "type") else {
            throw reader.error(element, "missing <type>hvm</type>")
        }
        let typeText = type.text.trimmingWhitespace()
        guard typeText == "hvm" else {
            throw reader.unsupported(type, "OS type '\(typeText)' (vmshim runs full virtualisation guests: hvm)")
        }
        let arch = reader.attribute(type, "arch") ?? "x86_64"
        guard arch == "x86_64" else { throw reader.unsupported(type, "arch='\(arch)' (vmshim runs x86_64 guests)") }
        let machine = reader.attribute(type, "machine") ?? "pc"
        guard isKnownMachine(machine) else {
            throw reader.unsupported(type, "machine='\(machine)' (vmshim supports the pc (i440fx) and q35 families)")
        }
        var os = DomainSpec.OS(
            arch: arch, machine: machine, bootDevices: [], bootMenu: nil, bootMenuTimeoutMilliseconds: nil,
            kernel: nil, initrd: nil, cmdline: nil)
        for boot in reader.children(element, "boot") {
            let dev = try reader.requiredAttribute(boot, "dev")
            guard let device = DomainSpec.BootDevice(rawValue: dev) else {
                throw reader.error(boot, "boot dev='\(dev)' must be hd, cdrom, network or fd")
            }
            guard !os.bootDevices.contains(device) else { throw reader.error(boot, "boot dev='\(dev)' is repeated") }
            os.bootDevices.append(device)
        }
        if let menu = try reader.child(element, "bootmenu") {
            os.bootMenu = try reader.boolAttribute(menu, "enable")
            os.bootMenuTimeoutMilliseconds = try reader.intAttribute(menu, "timeout", range: 0...65535)
        }
        os.kernel = try absolutePath(element, "kernel")
        os.initrd = try absolutePath(element, "initrd")
        os.cmdline = try reader.childText(element, "cmdline")
        if os.initrd != nil, os.kernel == nil {
            throw reader.error(element, "<initrd> needs a <kernel>")
        }
        os.firmware = try parseFirmware(element, autoselect: firmware)
        for unsupported in ["dtb", "acpi", "bios", "init", "initarg"] {
            if let node = try reader.child(element, unsupported) {
                throw reader.unsupported(node, "<os><\(unsupported)>")
            }
        }
        return os
    }

    /// `<firmware>`, `<loader>` and `<nvram>` (pflash UEFI only).
    func parseFirmware(_ os: XMLElement, autoselect: DomainSpec.Firmware?) throws -> DomainSpec.Firmware? {
        var firmware = autoselect
        if let element = try reader.child(os, "firmware") {
            guard firmware != nil else { throw reader.error(element, "<firmware> needs <os firmware='efi'>") }
            for feature in reader.children(element, "feature") {
                let name = try reader.requiredAttribute(feature, "name")
                guard name == "secure-boot" || name == "enrolled-keys" else {
                    throw reader.error(feature, "firmware feature '\(name)' must be secure-boot or enrolled-keys")
                }
                guard let enabled = try reader.boolAttribute(feature, "enabled") else {
                    throw reader.error(feature, "a firmware <feature> needs enabled='yes' or 'no'")
                }
                firmware?.wantedFeatures[name] = enabled
            }
        }
        if let loader = try reader.child(os, "loader") {
            if firmware == nil { firmware = DomainSpec.Firmware(autoselect: false) }
            let type = reader.attribute(loader, "type") ?? "pflash"
            guard type == "pflash" else { throw reader.unsupported(loader, "loader type='\(type)' (vmshim boots pflash UEFI)") }
            if try reader.boolAttribute(loader, "readonly") == false {
                throw reader.unsupported(loader, "a writable loader (readonly='no')")
            }
            if let format = reader.attribute(loader, "format"), format != "raw" {
                throw reader.unsupported(loader, "loader format='\(format)' (raw only)")
            }
            if try reader.boolAttribute(loader, "stateless") == true { throw reader.unsupported(loader, "a stateless loader") }
            firmware?.secure = try reader.boolAttribute(loader, "secure")
            let path = loader.text.trimmingWhitespace()
            if !path.isEmpty {
                guard path.hasPrefix("/") else { throw reader.error(loader, "loader '\(path)' must be an absolute path") }
                firmware?.loader = path
            } else if firmware?.autoselect != true {
                throw reader.error(loader, "<loader> needs the firmware's path (or use <os firmware='efi'>)")
            }
            firmware?.xmlLine = loader.line
        }
        if let nvram = try reader.child(os, "nvram") {
            guard firmware != nil else { throw reader.error(nvram, "<nvram> needs a <loader> or <os firmware='efi'>") }
            if let template = reader.attribute(nvram, "template") {
                guard template.hasPrefix("/") else { throw reader.error(nvram, "template '\(template)' must be an absolute path") }
                firmware?.nvramTemplate = template
            }
            if let format = reader.attribute(nvram, "format"), format != "raw" {
                throw reader.unsupported(nvram, "nvram format='\(format)' (raw only)")
            }
            if let type = reader.attribute(nvram, "type"), type != "file" { throw reader.unsupported(nvram, "nvram type='\(type)'") }
            let path = nvram.text.trimmingWhitespace()
            if !path.isEmpty {
                guard path.hasPrefix("/") else { throw reader.error(nvram, "nvram '\(path)' must be an absolute path") }
                firmware?.nvram = path
            }
        }
        if firmware?.xmlLine == nil { firmware?.xmlLine = os.line }
        return firmware
    }

    func absolutePath(_ parent: XMLElement, _ name: String) throws -> String? {
        guard let node = try reader.child(parent, name) else { return nil }
        let path = node.text.trimmingWhitespace()
        guard path.hasPrefix("/") else { throw reader.error(node, "'\(path)' must be an absolute path") }
        return path
    }

    func isKnownMachine(_ machine: String) -> Bool {
        machine == "pc" || machine == "q35" || machine.hasPrefix("pc-i440fx-") || machine.hasPrefix("pc-q35-")
    }

    // MARK: - Features, clock, lifecycle, power

    func parseFeatures(_ root: XMLElement) throws -> DomainSpec.Features {
        var features = DomainSpec.Features(acpi: false, apic: false, pae: false)
        guard let element = try reader.child(root, "features") else { return features }
        if let acpi = try reader.child(element, "acpi") {
            features.acpi = true
            reader.ignoreAttributes(acpi)
        }
        if let apic = try reader.child(element, "apic") {
            features.apic = true
            if reader.attribute(apic, "eoi") != nil { throw reader.unsupported(apic, "apic eoi") }
        }
        if try reader.child(element, "pae") != nil { features.pae = true }
        func state(_ name: String) throws -> Bool? {
            guard let child = try reader.child(element, name) else { return nil }
            return try reader.boolAttribute(child, "state") ?? true
        }
        features.vmport = try state("vmport")
        features.pmu = try state("pmu")
        if let smm = try reader.child(element, "smm") {
            features.smm = try reader.boolAttribute(smm, "state") ?? true
            if let tseg = try reader.child(smm, "tseg") { throw reader.unsupported(tseg, "SMM <tseg> size") }
        }
        if let hyperv = try reader.child(element, "hyperv") {
            features.hyperv = try parseHyperV(hyperv)
        }
        if let kvm = try reader.child(element, "kvm") {
            var parsed = DomainSpec.KVM()
            func state(_ name: String) throws -> Bool? {
                guard let child = try reader.child(kvm, name) else { return nil }
                guard let on = try reader.boolAttribute(child, "state") else {
                    throw reader.error(child, "missing attribute 'state' (on or off)")
                }
                return on
            }
            parsed.hidden = try state("hidden") ?? false
            parsed.pollControl = try state("poll-control") ?? false
            parsed.pvIPIOff = try state("pv-ipi") == false
            if try state("hint-dedicated") == true {
                throw reader.unsupported(kvm, "KVM hint-dedicated (it needs each vCPU pinned, <cputune><vcpupin>)")
            }
            if try state("dirty-ring") == true {
                throw reader.unsupported(kvm, "the KVM dirty ring (a KVM accelerator setting)")
            }
            features.kvm = parsed
        }
        if let ioapic = try reader.child(element, "ioapic") {
            let driver = try reader.requiredAttribute(ioapic, "driver")
            guard driver == "kvm" || driver == "qemu" else { throw reader.error(ioapic, "driver='\(driver)' must be kvm or qemu") }
            features.ioapicDriver = driver
        }
        return features
    }

    /// `<hyperv>` as libvirt 9.0 reads it: every child has a required state;
    /// spinlocks needs retries >= 4095 and vendor_id a value of at most 12
    /// characters when on.
    func parseHyperV(_ element: XMLElement) throws -> DomainSpec.HyperV {
        var hyperv = DomainSpec.HyperV()
        switch reader.attribute(element, "mode") ?? "custom" {
        case "custom": break
        case "passthrough": hyperv.passthrough = true
        case let mode: throw reader.error(element, "mode='\(mode)' must be custom or passthrough")
        }
        for name in ["emsr_bitmap", "xmm_input"] {
            if let child = try reader.child(element, name) {
                throw reader.unsupported(child, "Hyper-V '\(name)' (QEMU 7.2 has no hv-\(name.replacingAll("_", with: "-")); libvirt's start fails on it)")
            }
        }
        for enlightenment in DomainSpec.HyperV.Enlightenment.allCases {
            guard let child = try reader.child(element, enlightenment.rawValue) else { continue }
            guard let on = try reader.boolAttribute(child, "state") else {
                throw reader.error(child, "missing attribute 'state' (on or off)")
            }
            switch enlightenment {
            case .spinlocks:
                let retries = try reader.intAttribute(child, "retries", range: 0...Int(UInt32.max))
                if on {
                    guard let retries else { throw reader.error(child, "spinlocks state='on' needs retries (at least 4095)") }
                    guard retries >= 4095 else {
                        throw reader.error(child, "retries='\(retries)' is below 4095, the least Hyper-V spinlock retry count libvirt accepts")
                    }
                    hyperv.spinlockRetries = UInt32(retries)
                }
            case .vendorID:
                let value = reader.attribute(child, "value")
                if on {
                    guard let value, !value.isEmpty else { throw reader.error(child, "vendor_id state='on' needs a value") }
                    // libvirt counts bytes: the id is 12 bytes of CPUID.
                    guard value.utf8.count <= 12 else {
                        throw reader.error(child, "value='\(value)' is longer than the 12 bytes of a Hyper-V vendor id")
                    }
                    hyperv.vendorID = value
                }
            case .stimer:
                if let direct = try reader.child(child, "direct") {
                    guard let directOn = try reader.boolAttribute(direct, "state") else {
                        throw reader.error(direct, "missing attribute 'state' (on or off)")
                    }
                    hyperv.stimerDirect = on && directOn
                }
            case .tlbflush:
                for name in ["direct", "extended"] {
                    if let sub = try reader.child(child, name) {
                        throw reader.unsupported(sub, "tlbflush <\(name)> (newer than libvirt 9.0)")
                    }
                }
            default:
                break
            }
            if on { hyperv.enabled.insert(enlightenment) }
        }
        return hyperv
    }

    func parseClock(_ root: XMLElement) throws -> DomainSpec.Clock {
        var clock = DomainSpec.Clock(offset: .utc, timers: [])
        guard let element = try reader.child(root, "clock") else { return clock }
        let offset = reader.attribute(element, "offset") ?? "utc"
        switch offset {
        case "utc":
            clock.offset = .utc
            if let adjustment = reader.attribute(element, "adjustment"), adjustment != "reset" {
                guard let seconds = Int64(adjustment) else {
                    throw reader.error(element, "adjustment='\(adjustment)' must be 'reset' or seconds")
                }
                clock.offset = .variable(adjustmentSeconds: seconds, basisLocaltime: false)
            }
        case "localtime":
            clock.offset = .localtime
            if let adjustment = reader.attribute(element, "adjustment"), adjustment != "reset" {
                throw reader.unsupported(element, "adjustment with offset='localtime'")
            }
        case "variable":
            let adjustment = reader.attribute(element, "adjustment") ?? "0"
            guard let seconds = Int64(adjustment) else {
                throw reader.error(element, "adjustment='\(adjustment)' must be a number of seconds")
            }
            let basis = reader.attribute(element, "basis") ?? "utc"
            guard basis == "utc" || basis == "localtime" else {
                throw reader.error(element, "basis='\(basis)' must be utc or localtime")
            }
            clock.offset = .variable(adjustmentSeconds: seconds, basisLocaltime: basis == "localtime")
        default:
            throw reader.unsupported(element, "clock offset='\(offset)'")
        }
        for timerElement in reader.children(element, "timer") {
            let nameRaw = try reader.requiredAttribute(timerElement, "name")
            guard let name = DomainSpec.Clock.Timer.Name(rawValue: nameRaw) else {
                throw reader.error(timerElement, "unknown timer '\(nameRaw)'")
            }
            var timer = DomainSpec.Clock.Timer(name: name, present: nil, tickPolicy: nil, track: nil)
            timer.present = try reader.boolAttribute(timerElement, "present")
            if timer.present != nil, ![.hpet, .kvmclock, .hypervclock].contains(name) {
                throw reader.unsupported(timerElement, "present= on timer '\(name.rawValue)' (vmshim applies it to hpet, kvmclock and hypervclock)")
            }
            timer.tickPolicy = try reader.enumAttribute(timerElement, "tickpolicy", DomainSpec.Clock.TickPolicy.self)
            timer.track = reader.attribute(timerElement, "track")
            switch name {
            case .rtc:
                if let policy = timer.tickPolicy, policy != .catchup, policy != .delay {
                    throw reader.unsupported(timerElement, "rtc tickpolicy='\(policy.rawValue)'")
                }
                if let track = timer.track, !["guest", "wall", "realtime"].contains(track) {
                    throw reader.error(timerElement, "track='\(track)' must be guest, wall or realtime")
                }
            case .pit:
                if let policy = timer.tickPolicy, policy != .delay, policy != .catchup, policy != .discard {
                    throw reader.unsupported(timerElement, "pit tickpolicy='\(policy.rawValue)'")
                }
            case .hpet:
                // libvirt's QEMU driver accepts and ignores it (QEMU's hpet has no tick policy).
                break
            case .kvmclock, .hypervclock:
                // Paravirtual clocks: present= becomes kvmclock=on|off and hv-time=on on -cpu.
                if timer.tickPolicy != nil { throw reader.unsupported(timerElement, "tickpolicy on \(nameRaw)") }
            case .tsc, .platform, .armvtimer:
                throw reader.unsupported(timerElement, "timer '\(nameRaw)'")
            }
            if timer.track != nil, name != .rtc { throw reader.error(timerElement, "track is only valid for rtc") }
            if let catchup = try reader.child(timerElement, "catchup") {
                // Read and checked as libvirt does; its QEMU driver puts none of it on
                // argv (QEMU has no such knobs), so neither does vmshim.
                guard timer.tickPolicy == .catchup else {
                    throw reader.error(catchup, "<catchup> needs tickpolicy='catchup' on its timer")
                }
                for attribute in ["threshold", "slew", "limit"] {
                    if let value = try reader.intAttribute(catchup, attribute), value < 0 {
                        throw reader.error(catchup, "\(attribute)='\(value)' must not be negative")
                    }
                }
            }
            clock.timers.append(timer)
        }
        return clock
    }

    func parseLifecycle(_ root: XMLElement) throws -> DomainSpec.Lifecycle {
        func action(_ name: String, default value: DomainSpec.LifecycleAction) throws -> DomainSpec.LifecycleAction {
            guard let element = try reader.child(root, name) else { return value }
            let text = element.text.trimmingWhitespace()
            guard let action = DomainSpec.LifecycleAction(rawValue: text) else {
                throw reader.error(element, "'\(text)' is not a lifecycle action (destroy, restart, …)")
            }
            switch action {
            case .destroy, .restart:
                break
            case .preserve:
                // libvirt's QEMU driver refuses 'preserve' as well.
                throw reader.unsupported(element, "the 'preserve' action (libvirt's QEMU driver refuses it too)")
            case .renameRestart:
                throw reader.unsupported(element, "the 'rename-restart' action")
            case .coredumpDestroy, .coredumpRestart:
                guard name == "on_crash" else {
                    throw reader.error(element, "'\(text)' is only valid in <on_crash>")
                }
                throw reader.unsupported(element, "the '\(text)' crash action (guest memory dumps)")
            }
            return action
        }
        return DomainSpec.Lifecycle(
            onPoweroff: try action("on_poweroff", default: .destroy),
            onReboot: try action("on_reboot", default: .restart),
            onCrash: try action("on_crash", default: .destroy))
    }

    func parsePower(_ root: XMLElement) throws -> DomainSpec.PowerManagement {
        var power = DomainSpec.PowerManagement(suspendToMem: nil, suspendToDisk: nil)
        guard let element = try reader.child(root, "pm") else { return power }
        if let mem = try reader.child(element, "suspend-to-mem") {
            power.suspendToMem = try reader.boolAttribute(mem, "enabled")
        }
        if let disk = try reader.child(element, "suspend-to-disk") {
            power.suspendToDisk = try reader.boolAttribute(disk, "enabled")
        }
        return power
    }

    /// `<resource><partition>/machine</partition></resource>` is what libvirt's
    /// dumpxml adds; it names libvirt's default placement, which is vmshim's
    /// default too. `register='none'` (vmshim's extension, from the original
    /// libvirt_qemu shim design) keeps QEMU in the caller's cgroup. Returns
    /// whether vmshim may place QEMU in a cgroup of its own.
    func parseResource(_ root: XMLElement) throws -> Bool {
        guard let element = try reader.child(root, "resource") else { return true }
        var register = true
        if let value = reader.attribute(element, "register") {
            guard value == "none" else {
                throw reader.error(element, "register='\(value)' is not known; the only value is 'none' (QEMU stays in the caller's cgroup)")
            }
            register = false
        }
        if let partition = try reader.child(element, "partition") {
            let value = partition.text.trimmingWhitespace()
            guard value == "/machine" else {
                throw reader.unsupported(partition, "resource partition '\(value)' (only the default /machine)")
            }
        }
        return register
    }

    // MARK: - Resource tuning

    /// `<numatune>` with static placement: `<memory mode nodeset>` and
    /// `<memnode cellid mode nodeset>` (a guest cell that exists, each once).
    func parseNUMATune(_ root: XMLElement, cells: [Int], memoryDevices: Bool) throws -> DomainSpec.NUMATune {
        var tune = DomainSpec.NUMATune()
        guard let element = try reader.child(root, "numatune") else { return tune }
        func binding(_ node: XMLElement) throws -> DomainSpec.NUMATune.Binding {
            let mode = try reader.enumAttribute(node, "mode", DomainSpec.NUMATune.Mode.self) ?? .strict
            if let placement = reader.attribute(node, "placement"), placement != "static" {
                throw reader.unsupported(node, "placement='\(placement)' (it asks numad for the nodes)")
            }
            let text = try reader.requiredAttribute(node, "nodeset")
            guard let nodes = DomainParser.parseCPUSet(text), !nodes.isEmpty else {
                throw reader.error(node, "nodeset='\(text)' is not a host NUMA node list like 0-1,^1")
            }
            return .init(mode: mode, hostNodes: nodes)
        }
        if let memory = try reader.child(element, "memory") { tune.memory = try binding(memory) }
        for memnode in reader.children(element, "memnode") {
            let cell = try reader.intAttribute(memnode, "cellid", range: 0...Int(Int32.max)) ?? -1
            guard cells.contains(cell) else {
                throw reader.error(memnode, "memnode cellid='\(cell)' names no guest NUMA cell (<cpu><numa><cell id>)")
            }
            guard tune.cells[cell] == nil else { throw reader.error(memnode, "cell \(cell) has two <memnode>s") }
            tune.cells[cell] = try binding(memnode)
        }
        if memoryDevices, !tune.isEmpty {
            throw reader.unsupported(element, "<numatune> together with memory devices (DIMMs, virtio-mem)")
        }
        return tune
    }

    /// `<cputune>`'s pins, checked as libvirt checks them: a vCPU below the
    /// maximum, an iothread that exists, each pinned once, a cpuset in
    /// libvirt's syntax.
    func parsePinning(_ root: XMLElement, vcpus: Int, iothreads: [Int]) throws -> DomainSpec.CPUPinning {
        var pinning = DomainSpec.CPUPinning()
        guard let cputune = try reader.child(root, "cputune") else { return pinning }
        func cpus(_ element: XMLElement) throws -> [Int] {
            let text = try reader.requiredAttribute(element, "cpuset")
            guard let set = DomainParser.parseCPUSet(text), !set.isEmpty else {
                throw reader.error(element, "cpuset='\(text)' is not a CPU list like 0-3,^2,6")
            }
            return set
        }
        for element in reader.children(cputune, "vcpupin") {
            let vcpu = try reader.intAttribute(element, "vcpu", range: 0...4095) ?? -1
            guard vcpu >= 0, vcpu < vcpus else {
                throw reader.error(element, "vcpupin names vCPU \(vcpu); the domain has vCPUs 0 to \(vcpus - 1)")
            }
            guard pinning.vcpus[vcpu] == nil else { throw reader.error(element, "vCPU \(vcpu) is pinned twice") }
            pinning.vcpus[vcpu] = try cpus(element)
        }
        if let element = try reader.child(cputune, "emulatorpin") { pinning.emulator = try cpus(element) }
        for element in reader.children(cputune, "iothreadpin") {
            let id = try reader.intAttribute(element, "iothread", range: 1...Int(Int32.max)) ?? 0
            guard iothreads.contains(id) else { throw reader.error(element, "iothreadpin names iothread \(id), which the domain does not have") }
            guard pinning.iothreads[id] == nil else { throw reader.error(element, "iothread \(id) is pinned twice") }
            pinning.iothreads[id] = try cpus(element)
        }
        return pinning
    }

    /// `<memtune>`, `<cputune>` and `<blkiotune>`, with libvirt's ranges. The
    /// parts vmshim does not apply (pinning, emulator and iothread periods,
    /// per-device I/O limits, min_guarantee) stay unread and are refused.
    /// `<memoryBacking>`: memfd or anonymous RAM, shared or private, allocated
    /// at once or on demand, out of KSM. Hugepages, file backing and locked
    /// memory are refused.
    func parseMemoryBacking(_ root: XMLElement, numa: Bool) throws -> DomainSpec.MemoryBacking {
        var backing = DomainSpec.MemoryBacking()
        guard let element = try reader.child(root, "memoryBacking") else { return backing }
        backing.noSharePages = try reader.child(element, "nosharepages") != nil
        if let discard = try reader.child(element, "discard") { reader.ignoreAttributes(discard) }  // no effect on RAM or memfd, as in libvirt
        if let source = try reader.child(element, "source") {
            switch reader.attribute(source, "type") ?? "anonymous" {
            case "anonymous": break
            case "memfd": backing.memfd = true
            case let other: throw reader.unsupported(source, "memory source type='\(other)' (anonymous or memfd)")
            }
        }
        if let hugepages = try reader.child(element, "hugepages") {
            backing.hugepages = true
            let pages = reader.children(hugepages, "page")
            if pages.count > 1 { throw reader.unsupported(pages[1], "huge pages of more than one size") }
            if let page = pages.first {
                if page.attribute("nodeset") != nil {
                    throw reader.unsupported(page, "huge pages for some NUMA nodes only (nodeset)")
                }
                let sizeText = try reader.requiredAttribute(page, "size")
                guard let size = UInt64(sizeText), size > 0 else { throw reader.error(page, "size='\(sizeText)' is not a page size") }
                let unit = reader.attribute(page, "unit") ?? "KiB"
                guard let kib = Self.kibibytes(size, unit: unit), kib > 4 else {
                    throw reader.error(page, "\(size) \(unit) is not a huge page size (for example size='2' unit='MiB')")
                }
                backing.hugepageSizeKiB = kib
            }
        }
        if let access = try reader.child(element, "access") {
            switch reader.attribute(access, "mode") ?? "private" {
            case "private": backing.sharedAccess = false
            case "shared": backing.sharedAccess = true
            case let other: throw reader.error(access, "access mode='\(other)' must be shared or private")
            }
        }
        if let allocation = try reader.child(element, "allocation") {
            switch reader.attribute(allocation, "mode") ?? "ondemand" {
            case "ondemand": break
            case "immediate": backing.preallocate = true
            case let other: throw reader.error(allocation, "allocation mode='\(other)' must be immediate or ondemand")
            }
            if allocation.attribute("threads") != nil { throw reader.unsupported(allocation, "preallocation threads") }
        }
        return backing
    }

    /// `<iothreads>N</iothreads>` and `<iothreadids>`: like libvirt, the listed
    /// ids first, then the lowest unused ids up to N.
    func parseIOThreads(_ root: XMLElement) throws -> [Int] {
        var ids: [Int] = []
        if let list = try reader.child(root, "iothreadids") {
            for element in reader.children(list, "iothread") {
                guard let id = try reader.intAttribute(element, "id", range: 1...Int(Int32.max)) else {
                    throw reader.error(element, "an <iothread> needs an id")
                }
                guard !ids.contains(id) else { throw reader.error(element, "iothread id \(id) is listed twice") }
                for unsupported in ["thread_pool_min", "thread_pool_max"] where element.attribute(unsupported) != nil {
                    throw reader.unsupported(element, "iothread \(unsupported)")
                }
                if let poll = try reader.child(element, "poll") { throw reader.unsupported(poll, "iothread <poll> tuning") }
                ids.append(id)
            }
        }
        if let element = try reader.child(root, "iothreads") {
            let text = element.text.trimmingWhitespace()
            guard let count = Int(text), count >= 0, count <= 1024 else {
                throw reader.error(element, "'\(text)' is not an iothread count (0 to 1024)")
            }
            guard count >= ids.count else {
                throw reader.error(element, "\(count) iothreads, but <iothreadids> lists \(ids.count)")
            }
            var next = 1
            while ids.count < count {
                while ids.contains(next) { next += 1 }
                ids.append(next)
            }
        }
        return ids
    }

    func parseTuning(_ root: XMLElement) throws -> DomainSpec.Tuning {
        var tuning = DomainSpec.Tuning()
        if let memtune = try reader.child(root, "memtune") {
            func limit(_ name: String) throws -> UInt64? {
                guard let element = try reader.child(memtune, name) else { return nil }
                return min(try kibibytes(element), DomainSpec.Tuning.unlimitedKiB)
            }
            tuning.memoryHardLimitKiB = try limit("hard_limit")
            tuning.memorySoftLimitKiB = try limit("soft_limit")
            tuning.swapHardLimitKiB = try limit("swap_hard_limit")
            if let hard = tuning.memoryHardLimitKiB, let swap = tuning.swapHardLimitKiB, hard > swap {
                throw reader.error(memtune, "memory hard_limit tuning value must be less than or equal to swap_hard_limit")
            }
        }
        if let cputune = try reader.child(root, "cputune") {
            func number(_ name: String, _ range: ClosedRange<Int64>) throws -> Int64? {
                guard let element = try reader.child(cputune, name) else { return nil }
                let text = element.text.trimmingWhitespace()
                guard let value = Int64(text), range.contains(value) else {
                    throw reader.error(element, "<\(name)> '\(text)' must be an integer in \(range.lowerBound)…\(range.upperBound)")
                }
                return value
            }
            tuning.cpuShares = try number("shares", 2...262_144).map { UInt64($0) }
            tuning.cpuPeriodMicros = try number("period", 1000...1_000_000).map { UInt64($0) }
            if let quota = try number("quota", -1...17_592_186_044_415) {
                guard quota < 0 || quota >= 1000 else {
                    throw reader.error(cputune, "<quota> must be -1 (unlimited) or in 1000…17592186044415")
                }
                tuning.cpuQuotaMicros = quota
            }
        }
        if let blkiotune = try reader.child(root, "blkiotune") {
            if let weightElement = try reader.child(blkiotune, "weight") {
                let text = weightElement.text.trimmingWhitespace()
                guard let weight = UInt32(text), (100...1000).contains(weight) else {
                    throw reader.error(weightElement, "<weight> '\(text)' must be an integer in 100…1000")
                }
                tuning.blkioWeight = weight
            }
        }
        return tuning
    }

    func parseSecurityLabels(_ root: XMLElement) throws {
        for label in reader.children(root, "seclabel") {
            let type = reader.attribute(label, "type") ?? "dynamic"
            let model = reader.attribute(label, "model")
            switch (type, model) {
            case ("none", _):
                reader.ignoreAttributes(label, "model")
            default:
                throw reader.unsupported(
                    label, "security label type='\(type)'\(model.map { " model='\($0)'" } ?? "") (only type='none')")
            }
        }
    }

    // MARK: - Boot order

    /// libvirt forbids mixing `<os><boot>` with per-device `<boot order>`, and
    /// per-device orders must be unique.
    func validateBootOrder(_ spec: inout DomainSpec, root: XMLElement) throws {
        var orders: [Int] = spec.devices.disks.compactMap(\.bootOrder)
        orders += spec.devices.interfaces.compactMap(\.bootOrder)
        guard !orders.isEmpty else { return }
        let osElement = root.firstElement(named: "os") ?? root
        if !spec.os.bootDevices.isEmpty {
            throw reader.error(
                osElement, "per-device <boot order=…> cannot be combined with <os><boot dev=…>; use one or the other")
        }
        if Set(orders).count != orders.count {
            throw reader.error(osElement, "two devices share the same <boot order>; each must be unique")
        }
    }
}
