/// What libvirt fills in between parsing and launching, done the same way so
/// the guest sees the same hardware: implicit controllers and devices, MAC
/// addresses, drive and PCI addresses, device aliases (which become QEMU ids).
///
/// Pure except for the injected `Environment` (random MACs, free VNC ports,
/// the run directory), so golden tests are deterministic.
public struct DomainDefaults {
    public struct Environment: Sendable {
        public var runDirectory: RunDirectory
        public var randomMAC: @Sendable () -> String
        /// Returns a free TCP port ≥ 5900 on the given listen address, not
        /// among those already taken by the domain's other displays.
        public var freeDisplayPort: @Sendable (String, Set<Int>) throws -> Int
        /// The XML is a running VM's live definition (reattach): ports it
        /// records are in use by that VM and are kept, not reallocated.
        public var isLiveDefinition: Bool
        /// QEMU's firmware descriptors, for `<os firmware='efi'>`.
        public var firmwareDescriptors: @Sendable () -> [FirmwareDescriptor]
        /// Where a UEFI variable store goes when `<nvram>` names none.
        public var nvramDirectory: String
        /// The host's hugetlbfs mounts and default huge page size, for `<hugepages>`.
        public var hugetlbfsMounts: @Sendable () -> [Hugepages.Mount]
        public var defaultHugepageSizeKiB: @Sendable () -> UInt64?

        public init(
            runDirectory: RunDirectory, randomMAC: @escaping @Sendable () -> String = DomainDefaults.randomMAC,
            freeDisplayPort: @escaping @Sendable (String, Set<Int>) throws -> Int, isLiveDefinition: Bool = false,
            firmwareDescriptors: @escaping @Sendable () -> [FirmwareDescriptor] = { FirmwareDescriptor.loadSystem() },
            nvramDirectory: String? = nil,
            hugetlbfsMounts: @escaping @Sendable () -> [Hugepages.Mount] = { Hugepages.mounts() },
            defaultHugepageSizeKiB: @escaping @Sendable () -> UInt64? = { Hugepages.defaultPageSizeKiB() }
        ) {
            self.hugetlbfsMounts = hugetlbfsMounts
            self.defaultHugepageSizeKiB = defaultHugepageSizeKiB
            self.runDirectory = runDirectory
            self.randomMAC = randomMAC
            self.freeDisplayPort = freeDisplayPort
            self.isLiveDefinition = isLiveDefinition
            self.firmwareDescriptors = firmwareDescriptors
            self.nvramDirectory = nvramDirectory ?? RunDirectory.defaultNVRAMDirectory(root: runDirectory.root)
        }
    }

    let file: String
    let environment: Environment

    public init(file: String, environment: Environment) {
        self.file = file
        self.environment = environment
    }

    func error(_ message: String, at line: Int? = nil, code: ShimError.Code = .invalidArgument) -> ShimError {
        ShimError.afterParsing(file: file, line: line, message, code: code)
    }

    /// libvirt's MAC prefix for QEMU guests plus three random bytes.
    @Sendable public static func randomMAC() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<3).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return (["52", "54", "00"] + bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) })
            .joined(separator: ":")
    }

    public func apply(_ input: DomainSpec) throws -> DomainSpec {
        var spec = input
        let isQ35 = spec.os.isQ35
        // x86 guests get whole MiB, as libvirt aligns them at start.
        spec.memory.maximumKiB = (spec.memory.maximumKiB + 1023) / 1024 * 1024
        spec.memory.currentKiB = min(spec.memory.currentKiB, spec.memory.totalKiB)
        try resolveHugepages(&spec)

        let hasDeviceBootOrder =
            spec.devices.disks.contains { $0.bootOrder != nil } || spec.devices.interfaces.contains { $0.bootOrder != nil }
        if spec.os.bootDevices.isEmpty, !hasDeviceBootOrder {
            spec.os.bootDevices = [.hd]
        }

        try arrangeDisks(&spec, isQ35: isQ35)
        try arrangeControllers(&spec, isQ35: isQ35)
        try arrangeCharDevices(&spec)
        try arrangeInputsAndVideo(&spec)
        try checkIOThreadReferences(spec)
        try resolveFirmware(&spec, isQ35: isQ35)
        if let iommu = spec.devices.iommu, !isQ35 {
            throw error("the \(iommu.model.rawValue) IOMMU needs the q35 machine type (libvirt refuses it too)", at: iommu.xmlLine)
        }
        if spec.devices.memballoon == nil {
            spec.devices.memballoon = DomainSpec.Memballoon(model: .virtio, autodeflate: nil, freePageReporting: nil)
        }
        for index in spec.devices.interfaces.indices where spec.devices.interfaces[index].macGenerated {
            var mac = environment.randomMAC()
            while spec.devices.interfaces.contains(where: { $0.mac == mac }) { mac = environment.randomMAC() }
            spec.devices.interfaces[index].mac = mac
        }
        assignAliases(&spec, isQ35: isQ35)
        // VNC and SPICE share one port range; a domain may have one of each.
        var takenPorts = Set(spec.devices.graphics.compactMap(\.port))
        for index in spec.devices.graphics.indices where spec.devices.graphics[index].port == nil {
            if environment.isLiveDefinition, let recorded = spec.devices.graphics[index].recordedPort {
                spec.devices.graphics[index].port = recorded
            } else if case .address(let address) = spec.devices.graphics[index].listen {
                let port = try environment.freeDisplayPort(address, takenPorts)
                takenPorts.insert(port)
                spec.devices.graphics[index].port = port
            }
        }
        try PCIAddressAssigner(file: file).assign(&spec)
        return spec
    }

    // MARK: - Disks

    /// libvirt's disk array: grouped by bus in order of first appearance,
    /// sorted by target index within a bus (so vdz comes before vdaa).
    func arrangeDisks(_ spec: inout DomainSpec, isQ35: Bool) throws {
        var busOrder: [DomainSpec.Disk.Bus] = []
        for disk in spec.devices.disks where !busOrder.contains(disk.bus) { busOrder.append(disk.bus) }
        var arranged: [DomainSpec.Disk] = []
        for bus in busOrder {
            let group = spec.devices.disks.filter { $0.bus == bus }
            arranged += group.sorted {
                (DomainParser.diskIndex($0.targetDev) ?? 0) < (DomainParser.diskIndex($1.targetDev) ?? 0)
            }
        }
        var usedDriveAddresses = Set<String>()
        for index in arranged.indices {
            var disk = arranged[index]
            switch disk.bus {
            case .virtio:
                break
            case .ide:
                if isQ35 {
                    throw error("disk '\(disk.targetDev)': IDE controllers are unsupported for the q35 machine type; use bus='sata'", at: disk.xmlLine)
                }
                if disk.device == .disk, disk.readOnly {
                    throw error("disk '\(disk.targetDev)': readonly ide disks are not supported (libvirt refuses them too)", at: disk.xmlLine)
                }
                if disk.driveAddress == nil {
                    let i = DomainParser.diskIndex(disk.targetDev) ?? 0
                    disk.driveAddress = DriveAddress(controller: i / 4, bus: (i % 4) / 2, unit: i % 2)
                }
                if let address = disk.driveAddress, address.controller > 0 || address.bus > 1 || address.unit > 1 {
                    throw error("disk '\(disk.targetDev)': the PIIX3 IDE controller has two buses with two units each", at: disk.xmlLine)
                }
            case .usb:
                break
            case .fdc:
                if disk.driveAddress == nil {
                    disk.driveAddress = DriveAddress(controller: 0, bus: 0, unit: DomainParser.diskIndex(disk.targetDev) ?? 0)
                }
                if let address = disk.driveAddress, address.controller != 0 || address.bus != 0 || address.unit > 1 {
                    throw error("floppy '\(disk.targetDev)': the floppy controller has units 0 and 1 on bus 0", at: disk.xmlLine)
                }
            case .scsi:
                if disk.driveAddress == nil {
                    // libvirt's narrow-bus default (7 units per controller) for every model.
                    let i = DomainParser.diskIndex(disk.targetDev) ?? 0
                    guard i / 7 <= 31 else {
                        throw error("disk '\(disk.targetDev)': its default SCSI address needs controller \(i / 7); give it an <address type='drive'> on controller 0 to 31", at: disk.xmlLine)
                    }
                    disk.driveAddress = DriveAddress(controller: i / 7, bus: 0, unit: i % 7)
                }
                if let address = disk.driveAddress, address.bus != 0 {
                    throw error("disk '\(disk.targetDev)': SCSI controllers have bus 0 only", at: disk.xmlLine)
                }
            case .sata:
                if disk.device == .disk, disk.readOnly {
                    throw error("disk '\(disk.targetDev)': readonly sata disks are not supported (libvirt refuses them too)", at: disk.xmlLine)
                }
                if disk.driveAddress == nil {
                    let i = DomainParser.diskIndex(disk.targetDev) ?? 0
                    disk.driveAddress = DriveAddress(controller: i / 6, bus: 0, unit: i % 6)
                }
                if let address = disk.driveAddress, address.bus != 0 || address.unit > 5 {
                    throw error("disk '\(disk.targetDev)': a SATA controller has bus 0 with units 0 to 5", at: disk.xmlLine)
                }
            }
            if let address = disk.driveAddress {
                let key = "\(disk.bus)-\(address.controller)-\(address.bus)-\(address.unit)"
                guard usedDriveAddresses.insert(key).inserted else {
                    throw error("disks share the drive address controller \(address.controller) bus \(address.bus) unit \(address.unit)", at: disk.xmlLine)
                }
            }
            arranged[index] = disk
        }
        spec.devices.disks = arranged
    }

    /// `<os firmware='efi'>` and `<loader>`/`<nvram>` filled in as libvirt 9.0
    /// does: the first matching descriptor by file name, SMM switched on when
    /// the firmware needs it, the template of an explicit loader looked up, and
    /// the variable store in the NVRAM directory.
    func resolveFirmware(_ spec: inout DomainSpec, isQ35: Bool) throws {
        guard var firmware = spec.os.firmware else { return }
        guard spec.features.acpi else {
            throw error("UEFI requires ACPI: add <features><acpi/></features> (libvirt refuses it too)", at: firmware.xmlLine)
        }
        let descriptors = environment.firmwareDescriptors()
        if firmware.autoselect, firmware.loader == nil {
            guard let chosen = descriptors.first(where: { $0.matches(firmware, machine: spec.os.machine) }) else {
                let wanted = firmware.wantedFeatures.sorted { $0.key < $1.key }
                    .map { " with \($0.key) \($0.value ? "on" : "off")" }.joined()
                throw error(
                    "no UEFI firmware for machine '\(spec.os.machine)'\(wanted) among the descriptors in "
                        + "\(FirmwareDescriptor.searchDirectories.joined(separator: " and ")) (Debian: apt-get install ovmf)",
                    at: firmware.xmlLine, code: .notFound)
            }
            firmware.loader = chosen.executable
            if firmware.nvramTemplate == nil { firmware.nvramTemplate = chosen.nvramTemplate }
            if chosen.features.contains("secure-boot") { firmware.secure = true }
            if chosen.features.contains("requires-smm") {
                guard spec.features.smm != false else {
                    throw error(
                        "SMM is switched off but the chosen firmware \(chosen.executable) needs it; remove <smm state='off'/> "
                            + "or ask for <feature enabled='no' name='secure-boot'/> (libvirt refuses it too)",
                        at: firmware.xmlLine)
                }
                spec.features.smm = true
            }
        } else if firmware.nvramTemplate == nil {
            firmware.nvramTemplate = descriptors.first { $0.executable == firmware.loader }?.nvramTemplate
        }
        if firmware.secure == true {
            guard isQ35 else { throw error("Secure boot needs the q35 machine type (libvirt refuses it too)", at: firmware.xmlLine) }
            guard spec.features.smm == true else {
                throw error("Secure boot needs SMM: add <features><smm state='on'/></features>", at: firmware.xmlLine)
            }
        }
        if firmware.nvram == nil { firmware.nvram = environment.nvramDirectory + "/" + spec.name + "_VARS.fd" }
        spec.os.firmware = firmware
    }

    /// `<hugepages>` as libvirt does it: the page size asked for or the
    /// host's default, then (without memfd) the hugetlbfs mount of that size
    /// and a directory of the domain's own on it.
    func resolveHugepages(_ spec: inout DomainSpec) throws {
        guard spec.memoryBacking.hugepages else { return }
        guard let size = spec.memoryBacking.hugepageSizeKiB ?? environment.defaultHugepageSizeKiB() else {
            throw error("<hugepages>: the host has no huge pages (no Hugepagesize in /proc/meminfo)", code: .unavailable)
        }
        spec.memoryBacking.hugepageSizeKiB = size
        guard !spec.memoryBacking.memfd else { return }
        guard let mount = environment.hugetlbfsMounts().first(where: { $0.pageSizeKiB == size }) else {
            throw error(
                "<hugepages>: no hugetlbfs is mounted for \(size) KiB pages; mount one (mount -t hugetlbfs -o pagesize=\(size)k none /dev/hugepages) or use <source type='memfd'/>",
                code: .unavailable)
        }
        spec.memoryBacking.hugepageDirectory = mount.path + "/vmshim/" + spec.name
    }

    /// Disks and controllers name iothreads the domain defines.
    func checkIOThreadReferences(_ spec: DomainSpec) throws {
        for disk in spec.devices.disks {
            if let id = disk.iothread, !spec.iothreadIDs.contains(id) {
                throw error("disk '\(disk.targetDev)': iothread \(id) is not defined (see <iothreads>/<iothreadids>)", at: disk.xmlLine)
            }
        }
        for controller in spec.devices.controllers {
            if let id = controller.scsiIOThread, !spec.iothreadIDs.contains(id) {
                throw error("SCSI controller \(controller.index): iothread \(id) is not defined (see <iothreads>/<iothreadids>)", at: controller.xmlLine)
            }
        }
    }

    // MARK: - Controllers

    func arrangeControllers(_ spec: inout DomainSpec, isQ35: Bool) throws {
        var explicit = spec.devices.controllers
        for controller in explicit {
            switch (controller.kind, controller.model, controller.index) {
            case (.pci, "pci-root"?, let index):
                guard !isQ35 else { throw error("the q35 machine type needs model='pcie-root' for PCI controller 0", at: controller.xmlLine) }
                guard index == 0 else { throw error("pci-root must have index 0", at: controller.xmlLine) }
            case (.pci, "pcie-root"?, let index):
                guard isQ35 else { throw error("model='pcie-root' needs the q35 machine type", at: controller.xmlLine) }
                guard index == 0 else { throw error("pcie-root must have index 0", at: controller.xmlLine) }
            case (.pci, "pcie-root-port"?, let index):
                guard isQ35 else { throw error("pcie-root-port controllers need the q35 machine type", at: controller.xmlLine) }
                guard index > 0 else { throw error("PCI controller index 0 is the root bus", at: controller.xmlLine) }
            case (.pci, "pci-bridge"?, let index):
                guard !isQ35 else {
                    throw error("pci-bridge on q35 needs a dmi-to-pci-bridge, which vmshim does not support yet", at: controller.xmlLine, code: .unsupported)
                }
                guard index > 0 else { throw error("PCI controller index 0 is the root bus", at: controller.xmlLine) }
            case (.ide, _, let index):
                guard !isQ35 else { throw error("IDE controllers are unsupported for the q35 machine type", at: controller.xmlLine) }
                guard index == 0 else { throw error("only IDE controller 0 (the PIIX3 one) is supported", at: controller.xmlLine) }
            case (.fdc, _, let index):
                guard index == 0 else { throw error("only one floppy controller (index 0) exists", at: controller.xmlLine) }
                if isQ35, !spec.devices.disks.contains(where: { $0.bus == .fdc }) {
                    throw error("a floppy controller on q35 without a floppy disk is not supported yet; add a floppy or remove it", at: controller.xmlLine, code: .unsupported)
                }
            case (.usb, "piix3-uhci"?, _) where isQ35:
                throw error("the piix3-uhci USB controller belongs to the pc machine type; use qemu-xhci on q35", at: controller.xmlLine)
            default:
                break
            }
        }
        // USB companions share their master's index.
        for companion in explicit where companion.usbMasterStartPort != nil {
            guard explicit.contains(where: { $0.kind == .usb && $0.index == companion.index && $0.model == "ich9-ehci1" }) else {
                throw error(
                    "the companion USB controller \(companion.model ?? "") needs an ich9-ehci1 master with index \(companion.index)",
                    at: companion.xmlLine)
            }
            if isQ35, companion.index != 0 {
                throw error("USB2 companions on q35 sit at 00:1d: index 0 only", at: companion.xmlLine, code: .unsupported)
            }
        }
        var seen = Set<String>()
        for controller in explicit where controller.usbMasterStartPort == nil && !seen.insert("\(controller.kind.rawValue)/\(controller.index)").inserted {
            throw error("two <controller type='\(controller.kind.rawValue)' index='\(controller.index)'> elements", at: controller.xmlLine)
        }

        // Explicit controllers: grouped by type in order of first appearance, by index within a type.
        var typeOrder: [DomainSpec.Controller.Kind] = []
        for controller in explicit where !typeOrder.contains(controller.kind) { typeOrder.append(controller.kind) }
        // (A master and its companions keep their document order within the index.)
        explicit = typeOrder.flatMap { kind in
            explicit.enumerated().filter { $0.element.kind == kind }
                .sorted { ($0.element.index, $0.offset) < ($1.element.index, $1.offset) }.map(\.element)
        }

        func has(_ kind: DomainSpec.Controller.Kind, _ index: Int) -> Bool {
            explicit.contains { $0.kind == kind && $0.index == index }
        }
        func implicitController(_ kind: DomainSpec.Controller.Kind, _ index: Int, _ model: String?) -> DomainSpec.Controller {
            var controller = DomainSpec.Controller(kind: kind, index: index, model: model)
            controller.implicit = true
            return controller
        }
        // libvirt's defaults come next…
        if !has(.usb, 0) { explicit.append(implicitController(.usb, 0, isQ35 ? "qemu-xhci" : "piix3-uhci")) }
        if !has(.pci, 0) { explicit.append(implicitController(.pci, 0, isQ35 ? "pcie-root" : "pci-root")) }
        if isQ35, !has(.sata, 0) { explicit.append(implicitController(.sata, 0, nil)) }
        // …then the controllers devices need.
        // libvirt adds SCSI controllers for SCSI disks first, with its default model for QEMU with lsi.
        // Like libvirt (virDomainDefAddDiskControllersForType): every index up to the highest used.
        if let highest = spec.devices.disks.filter({ $0.bus == .scsi }).compactMap({ $0.driveAddress?.controller }).max() {
            for index in 0...highest where !has(.scsi, index) {
                explicit.append(implicitController(.scsi, index, "lsilogic"))
            }
        }
        for index in explicit.indices where explicit[index].kind == .scsi && explicit[index].model == nil {
            explicit[index].model = "lsilogic"
        }
        for disk in spec.devices.disks where disk.bus == .scsi {
            guard let address = disk.driveAddress,
                let controller = explicit.first(where: { $0.kind == .scsi && $0.index == address.controller })
            else { continue }
            if controller.model == "lsilogic", address.unit > 6 {
                throw error("disk '\(disk.targetDev)': an lsilogic controller has units 0 to 6 (7 is the controller)", at: disk.xmlLine)
            }
        }
        if !isQ35, spec.devices.disks.contains(where: { $0.bus == .ide }), !has(.ide, 0) {
            explicit.append(implicitController(.ide, 0, nil))
        }
        let sataControllers = spec.devices.disks.filter { $0.bus == .sata }.compactMap { $0.driveAddress?.controller }
        if let highest = sataControllers.max() {
            for index in 0...highest where !has(.sata, index) && !explicit.contains(where: { $0.kind == .sata && $0.index == index }) {
                explicit.append(implicitController(.sata, index, nil))
            }
        }
        if spec.devices.disks.contains(where: { $0.bus == .fdc }), !has(.fdc, 0) {
            explicit.append(implicitController(.fdc, 0, nil))
        }
        if !spec.devices.channels.isEmpty, !has(.virtioSerial, 0) {
            explicit.append(implicitController(.virtioSerial, 0, nil))
        }
        for controller in explicit where controller.kind == .usb && controller.model == nil {
            if let index = explicit.firstIndex(where: { $0.kind == .usb && $0.index == controller.index }) {
                explicit[index].model = isQ35 ? "qemu-xhci" : "piix3-uhci"
            }
        }
        spec.devices.controllers = explicit
    }

    // MARK: - Character devices

    func arrangeCharDevices(_ spec: inout DomainSpec) throws {
        // Serial target ports: explicit ones first, then the lowest free.
        var usedPorts = Set(spec.devices.serials.compactMap(\.targetPort))
        // Parallel ports: explicit ones first, then the lowest free of LPT1–3.
        var usedParallel = Set(spec.devices.parallels.compactMap(\.targetPort))
        for index in spec.devices.parallels.indices where spec.devices.parallels[index].targetPort == nil {
            guard let port = (0...2).first(where: { !usedParallel.contains($0) }) else {
                throw error("more than three parallel ports; the PC has LPT1 to LPT3", at: spec.devices.parallels[index].xmlLine)
            }
            spec.devices.parallels[index].targetPort = port
            usedParallel.insert(port)
        }
        if Set(spec.devices.parallels.compactMap(\.targetPort)).count != spec.devices.parallels.count {
            throw error("two <parallel> devices use the same target port", at: spec.devices.parallels.last?.xmlLine)
        }
        for index in spec.devices.serials.indices where spec.devices.serials[index].targetPort == nil {
            guard let port = (0...3).first(where: { !usedPorts.contains($0) }) else {
                throw error("more than four serial ports; the PC has COM1 to COM4", at: spec.devices.serials[index].xmlLine)
            }
            spec.devices.serials[index].targetPort = port
            usedPorts.insert(port)
        }
        var seenPorts = Set<Int>()
        for serial in spec.devices.serials {
            if let port = serial.targetPort, !seenPorts.insert(port).inserted {
                throw error("two <serial> devices use target port \(port)", at: serial.xmlLine)
            }
        }
        // A serial console is the serial port it names; without one libvirt creates it.
        for index in spec.devices.consoles.indices {
            let port = spec.devices.consoles[index].targetPort ?? 0
            spec.devices.consoles[index].targetPort = port
            if let serial = spec.devices.serials.first(where: { $0.targetPort == port }) {
                spec.devices.consoles[index].backend = serial.backend
            } else {
                var serial = spec.devices.consoles[index]
                serial.targetType = .isaSerial
                serial.xmlIndex = nil  // not one of the document's <serial> elements
                spec.devices.serials.append(serial)
            }
        }
        // virtio-serial port numbers ("nr"): 1, 2, … unless given.
        var usedNr = Set(spec.devices.channels.compactMap(\.targetPort))
        for index in spec.devices.channels.indices where spec.devices.channels[index].targetPort == nil {
            let nr = (1...31).first { !usedNr.contains($0) } ?? 31
            spec.devices.channels[index].targetPort = nr
            usedNr.insert(nr)
        }
        var seenNr = Set<Int>()
        for channel in spec.devices.channels {
            if let nr = channel.targetPort, !seenNr.insert(nr).inserted {
                throw error("two channels use virtio-serial port \(nr)", at: channel.xmlLine)
            }
        }
    }

    // MARK: - Inputs and video

    func arrangeInputsAndVideo(_ spec: inout DomainSpec) throws {
        let usbModel = spec.devices.controllers.first { $0.kind == .usb && $0.index == 0 && $0.usbMasterStartPort == nil }?.model
        for input in spec.devices.inputs where input.bus == .usb && usbModel == "none" {
            throw error("a USB \(input.kind.rawValue) needs a USB controller, but the domain has model='none'", at: input.xmlLine)
        }
        for disk in spec.devices.disks where disk.bus == .usb && usbModel == "none" {
            throw error("USB disk '\(disk.targetDev)' needs a USB controller, but the domain has model='none'", at: disk.xmlLine)
        }
        // USB ports, as libvirt counts them (virDomainUSBAddressControllerModelToPorts).
        for kind in [DomainSpec.Graphics.Kind.vnc, .spice] {
            let same = spec.devices.graphics.filter { $0.kind == kind }
            if same.count > 1 {
                throw error("only one <graphics type='\(kind.rawValue)'> is supported (libvirt refuses a second too)", at: same[1].xmlLine)
            }
        }
        // SPICE channels ride on the SPICE connection (libvirt refuses them without it too).
        let hasSpice = spec.devices.graphics.contains { $0.kind == .spice }
        if !hasSpice {
            if let channel = spec.devices.channels.first(where: { $0.backend == .spicevmc }) {
                throw error("a spicevmc channel needs <graphics type='spice'>", at: channel.xmlLine)
            }
            if let redirdev = spec.devices.redirdevs.first {
                throw error("a spicevmc redirdev needs <graphics type='spice'>", at: redirdev.xmlLine)
            }
            if spec.devices.audio == .spice {
                throw error("<audio type='spice'> needs <graphics type='spice'>; use <audio type='none'> or add SPICE graphics", at: spec.devices.audioLine)
            }
        }
        for sound in spec.devices.sounds where sound.model == .usb && (usbModel == "none" || usbModel == nil) {
            throw error("a USB sound device needs a USB controller, but the domain has model='none'", at: sound.xmlLine)
        }
        for redirdev in spec.devices.redirdevs where usbModel == "none" || usbModel == nil {
            throw error("a USB redirection device needs a USB controller, but the domain has model='none'", at: redirdev.xmlLine)
        }
        try assignUSBPorts(&spec, model: usbModel)
        // libvirt always lists a PS/2 mouse and keyboard on x86 (they are part of the chipset).
        for kind in [DomainSpec.Input.Kind.mouse, .keyboard]
        where !spec.devices.inputs.contains(where: { $0.kind == kind && $0.bus == .ps2 }) {
            var input = DomainSpec.Input(kind: kind, bus: .ps2)
            input.implicit = true
            spec.devices.inputs.append(input)
        }

        let primaries = spec.devices.videos.filter(\.primary)
        if primaries.count > 1 { throw error("only one <video> can be primary='yes'", at: primaries[1].xmlLine) }
        if let index = spec.devices.videos.firstIndex(where: \.primary), index != 0 {
            let primary = spec.devices.videos.remove(at: index)
            spec.devices.videos.insert(primary, at: 0)
        }
        if spec.devices.videos.isEmpty, !spec.devices.graphics.isEmpty {
            var video = DomainSpec.Video(
                model: .cirrus, vramKiB: 16384, ramKiB: nil, vgamemKiB: nil, vram64KiB: nil, heads: 1, primary: true)
            video.implicit = true
            spec.devices.videos.append(video)
        }
        if spec.devices.videos.count > 1, let none = spec.devices.videos.first(where: { $0.model == .none }) {
            throw error("video model 'none' can only be the only video device", at: none.xmlLine)
        }
        for (index, video) in spec.devices.videos.enumerated() where index > 0 {
            guard video.model == .qxl || video.model == .virtio else {
                throw error("a secondary video device must be qxl or virtio, not \(video.model.rawValue)", at: video.xmlLine)
            }
        }
        if !spec.devices.videos.isEmpty { spec.devices.videos[0].primary = spec.devices.videos[0].model != .none }
    }

    // MARK: - USB ports

    /// Every USB device's port, as libvirt 9.0 gives them: when the devices
    /// (hubs included) outnumber the ports (controller's plus 8 per hub),
    /// libvirt adds ceil((devices − ports + 1) / 7) hubs; explicit ports are
    /// reserved first (hubs, then the rest), the others take the first free
    /// port of the controller, else of its hubs depth first, in the order
    /// hubs, disks, input devices, sound, redirections.
    func assignUSBPorts(_ spec: inout DomainSpec, model usbModel: String?) throws {
        var devices = spec.devices
        for hub in devices.hubs where usbModel == "none" || usbModel == nil {
            throw error("a USB hub needs a USB controller, but the domain has model='none'", at: hub.xmlLine)
        }
        guard let usbModel, usbModel != "none" else { return }
        let controller = devices.controllers.first { $0.kind == .usb && $0.index == 0 && $0.usbMasterStartPort == nil }
        // libvirt's port counts: UHCI 2, EHCI 6 (companions add none), xHCI `ports` or 4.
        let capacity =
            usbModel == "piix3-uhci" || usbModel.hasPrefix("ich9-uhci") ? 2
            : usbModel == "ehci" || usbModel == "ich9-ehci1" ? 6 : (controller?.ports ?? 4)
        let others = devices.disks.filter { $0.bus == .usb }.count + devices.inputs.filter { $0.bus == .usb }.count
            + devices.sounds.filter { $0.model == .usb }.count + devices.redirdevs.count
        let count = devices.hubs.count + others
        let available = capacity + USBPortTree.hubPorts * devices.hubs.count
        if others > 0, count > available {
            let needed = (count - available + 1 + USBPortTree.hubPorts - 2) / (USBPortTree.hubPorts - 1)
            for _ in 0..<needed {
                var hub = DomainSpec.Hub()
                hub.implicit = true
                devices.hubs.append(hub)
            }
        }
        let tree = USBPortTree(rootPorts: capacity, model: usbModel)
        func reserve(_ port: String?, hub: Bool, line: Int?) throws {
            guard let port else { return }
            if let problem = tree.reserve(port, isHub: hub) { throw error(problem, at: line) }
        }
        for hub in devices.hubs { try reserve(hub.usbPort, hub: true, line: hub.xmlLine) }
        for disk in devices.disks where disk.bus == .usb { try reserve(disk.usbPort, hub: false, line: disk.xmlLine) }
        for input in devices.inputs where input.bus == .usb { try reserve(input.usbPort, hub: false, line: input.xmlLine) }
        for sound in devices.sounds where sound.model == .usb { try reserve(sound.usbPort, hub: false, line: sound.xmlLine) }
        for redirdev in devices.redirdevs { try reserve(redirdev.usbPort, hub: false, line: redirdev.xmlLine) }
        func assign(_ port: inout String?, hub: Bool, line: Int?) throws {
            guard port == nil else { return }
            guard let free = tree.takeFirstFree(isHub: hub) else {
                throw error("no free USB port is left on the \(usbModel) controller and its hubs", at: line)
            }
            port = free
        }
        for index in devices.hubs.indices { try assign(&devices.hubs[index].usbPort, hub: true, line: devices.hubs[index].xmlLine) }
        for index in devices.disks.indices where devices.disks[index].bus == .usb {
            try assign(&devices.disks[index].usbPort, hub: false, line: devices.disks[index].xmlLine)
        }
        for index in devices.inputs.indices where devices.inputs[index].bus == .usb {
            try assign(&devices.inputs[index].usbPort, hub: false, line: devices.inputs[index].xmlLine)
        }
        for index in devices.sounds.indices where devices.sounds[index].model == .usb {
            try assign(&devices.sounds[index].usbPort, hub: false, line: devices.sounds[index].xmlLine)
        }
        for index in devices.redirdevs.indices {
            try assign(&devices.redirdevs[index].usbPort, hub: false, line: devices.redirdevs[index].xmlLine)
        }
        spec.devices = devices
    }

    // MARK: - Aliases

    func assignAliases(_ spec: inout DomainSpec, isQ35: Bool) {
        func keep(_ alias: String, _ generated: String) -> String { alias.isEmpty ? generated : alias }
        for index in spec.devices.disks.indices {
            let disk = spec.devices.disks[index]
            let generated: String
            switch disk.bus {
            case .virtio: generated = "virtio-disk\(DomainParser.diskIndex(disk.targetDev) ?? index)"
            case .ide:
                let a = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                generated = "ide\(a.controller)-\(a.bus)-\(a.unit)"
            case .sata:
                let a = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                generated = "sata\(a.controller)-\(a.bus)-\(a.unit)"
            case .scsi:
                let a = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                let model = spec.devices.controllers.first { $0.kind == .scsi && $0.index == a.controller }?.model
                generated = model == "lsilogic"
                    ? "scsi\(a.controller)-\(a.bus)-\(a.unit)" : "scsi\(a.controller)-\(a.bus)-\(a.target)-\(a.unit)"
            case .usb:
                generated = "usb-disk\(DomainParser.diskIndex(disk.targetDev) ?? index)"
            case .fdc:
                let a = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                generated = "fdc\(a.controller)-\(a.bus)-\(a.unit)"
            }
            spec.devices.disks[index].alias = keep(disk.alias, generated)
        }
        for index in spec.devices.controllers.indices {
            let controller = spec.devices.controllers[index]
            let generated: String
            switch controller.kind {
            case .usb: generated = controller.index == 0 ? "usb" : "usb\(controller.index)"
            case .ide: generated = "ide"
            case .fdc: generated = "fdc\(controller.index)"
            case .scsi: generated = "scsi\(controller.index)"
            case .sata: generated = isQ35 && controller.index == 0 ? "ide" : "sata\(controller.index)"
            case .virtioSerial: generated = "virtio-serial\(controller.index)"
            case .pci: generated = controller.model == "pcie-root" ? "pcie.0" : "pci.\(controller.index)"
            }
            spec.devices.controllers[index].alias = keep(controller.alias, generated)
        }
        for index in spec.devices.interfaces.indices {
            spec.devices.interfaces[index].alias = keep(spec.devices.interfaces[index].alias, "net\(index)")
        }
        for index in spec.devices.parallels.indices {
            spec.devices.parallels[index].alias = keep(spec.devices.parallels[index].alias, "parallel\(index)")
        }
        for index in spec.devices.serials.indices {
            spec.devices.serials[index].alias = keep(spec.devices.serials[index].alias, "serial\(index)")
        }
        for index in spec.devices.consoles.indices {
            let port = spec.devices.consoles[index].targetPort ?? 0
            let serial = spec.devices.serials.first { $0.targetPort == port }
            spec.devices.consoles[index].alias = serial?.alias ?? "console\(index)"
        }
        for index in spec.devices.channels.indices {
            spec.devices.channels[index].alias = keep(spec.devices.channels[index].alias, "channel\(index)")
            if case .unixListen(let path) = spec.devices.channels[index].backend, path.isEmpty {
                let channel = spec.devices.channels[index]
                let name = channel.targetName ?? channel.alias
                spec.devices.channels[index].backend = .unixListen(path: environment.runDirectory.deviceSocket(name))
            }
        }
        for index in spec.devices.inputs.indices {
            spec.devices.inputs[index].alias = keep(spec.devices.inputs[index].alias, "input\(index)")
        }
        for index in spec.devices.videos.indices {
            spec.devices.videos[index].alias = keep(spec.devices.videos[index].alias, "video\(index)")
        }
        if let balloon = spec.devices.memballoon, balloon.model == .virtio {
            spec.devices.memballoon?.alias = keep(balloon.alias, "balloon0")
        }
        for index in spec.devices.rngs.indices {
            spec.devices.rngs[index].alias = keep(spec.devices.rngs[index].alias, "rng\(index)")
        }
        if let watchdog = spec.devices.watchdog {
            spec.devices.watchdog?.alias = keep(watchdog.alias, "watchdog0")
        }
        if let iommu = spec.devices.iommu {
            spec.devices.iommu?.alias = keep(iommu.alias, "iommu0")
        }
        for index in spec.devices.sounds.indices {
            spec.devices.sounds[index].alias = keep(spec.devices.sounds[index].alias, "sound\(index)")
        }
        for index in spec.devices.panics.indices {
            spec.devices.panics[index].alias = keep(spec.devices.panics[index].alias, "panic\(index)")
        }
        for index in spec.devices.hubs.indices {
            spec.devices.hubs[index].alias = keep(spec.devices.hubs[index].alias, "hub\(index)")
        }
        for index in spec.devices.redirdevs.indices {
            spec.devices.redirdevs[index].alias = keep(spec.devices.redirdevs[index].alias, "redir\(index)")
        }
        // DIMMs are named after their slot, virtio-mem devices in order (libvirt 9.0).
        // Only generated virtio-mem names count (a user alias takes no number).
        var virtioMem = 0
        for index in spec.devices.memoryDevices.indices {
            let device = spec.devices.memoryDevices[index]
            switch device.model {
            case .dimm: spec.devices.memoryDevices[index].alias = keep(device.alias, "dimm\(device.slot ?? index)")
            case .virtioMem where device.alias.isEmpty:
                spec.devices.memoryDevices[index].alias = "virtiomem\(virtioMem)"
                virtioMem += 1
            case .virtioMem:
                break
            }
        }
    }
}

extension DomainSpec.OS {
    public var isQ35: Bool { machine == "q35" || machine.hasPrefix("pc-q35-") }
}

extension ShimError {
    /// An error found after parsing (defaults, PCI addresses): it names the
    /// line of the element it is about when that came from the document, not
    /// for devices vmshim added.
    static func afterParsing(file: String, line: Int?, _ message: String, code: Code = .invalidArgument) -> ShimError {
        ShimError(code, line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)")
    }
}
