/// Turns a prepared `DomainSpec` (after `DomainDefaults`) into a `LaunchPlan`.
///
/// A pure function: same spec and context, same argv. The layout follows what
/// libvirt 9.0 generates for the same XML on QEMU 7.2 (see
/// docs/reference/libvirt-9.0-hardware.md). Device, blockdev, netdev and
/// object options use QEMU's JSON syntax, where user text cannot inject
/// options; every other option value that can hold user text goes through
/// `QEMUOption.escape` (QEMU's ",," escaping). `-kernel`, `-initrd` and
/// `-append` take their value verbatim (QEMU does not split them on commas).
public struct QEMUCommandLine {
    public struct Context: Sendable {
        public var runDirectory: RunDirectory
        /// Unix seconds at launch, for `<clock offset='variable'>`.
        public var now: Int64
        /// The host's UTC offset in seconds, for `basis='localtime'`.
        public var localTimeOffset: Int64
        /// A restore: QEMU waits for `migrate-incoming` on an inherited fd.
        public var incomingMigration: Bool

        public init(runDirectory: RunDirectory, now: Int64, localTimeOffset: Int64, incomingMigration: Bool = false) {
            self.runDirectory = runDirectory
            self.now = now
            self.localTimeOffset = localTimeOffset
            self.incomingMigration = incomingMigration
        }
    }

    public static let monitorFD: Int32 = 3

    let spec: DomainSpec
    let context: Context
    var arguments: [String] = []
    var fds: [FDRequest] = []
    var nextFD: Int32 = QEMUCommandLine.monitorFD + 1
    var nextFDSet = 0

    public static func plan(_ spec: DomainSpec, context: Context) throws -> LaunchPlan {
        var builder = QEMUCommandLine(spec: spec, context: context)
        try builder.build()
        var plan = LaunchPlan(
            executable: spec.emulator, arguments: builder.arguments,
            environment: [
                "LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=\(context.runDirectory.path)",
            ],
            fds: builder.fds)
        if spec.needsMemoryBackingDirectory { plan.directories.append(context.runDirectory.memoryBackingDirectory) }
        if let hugepages = spec.memoryBacking.hugepageDirectory { plan.directories.append(hugepages) }
        return plan
    }

    init(spec: DomainSpec, context: Context) {
        self.spec = spec
        self.context = context
    }

    mutating func add(_ options: String...) { arguments += options }

    mutating func addDevice(_ properties: JSONObject) { add("-device", JSONValue.object(properties).description) }

    mutating func passFD(_ resource: FDRequest.Resource) -> Int32 {
        let fd = nextFD
        nextFD += 1
        fds.append(FDRequest(childFD: fd, resource: resource))
        return fd
    }

    // MARK: - Whole command line

    mutating func build() throws {
        fds.append(FDRequest(childFD: Self.monitorFD, resource: .monitorListener(path: context.runDirectory.qmpSocket)))
        add("-name", "guest=\(QEMUOption.escape(spec.name)),debug-threads=on")
        add("-S")
        addFirmware()
        try addMachineAndCPU()
        for id in spec.iothreadIDs {
            add("-object", JSONValue.object(["qom-type": "iothread", "id": .string("iothread\(id)")]).description)
        }
        add("-uuid", spec.uuid.description)
        addSMBIOS()
        if spec.devices.graphics.isEmpty { add("-display", "none") }
        add("-no-user-config", "-nodefaults")
        add("-chardev", "socket,id=charmonitor,fd=\(Self.monitorFD),server=on,wait=off")
        add("-mon", "chardev=charmonitor,id=monitor,mode=control")
        addClock()
        add("-no-shutdown")
        addPowerManagement()
        addBoot()
        addIOMMU()
        addControllers()
        addMemoryDevices()
        addHubs()
        try addDisks()
        addInterfaces()
        addCharDevices()
        addInputs()
        add("-audiodev", JSONValue.object(["id": "audio1", "driver": .string(spec.devices.audioBackend.rawValue)]).description)
        addGraphics()
        addVideos()
        addSounds()
        addWatchdog()
        addRedirdevs()
        addBalloon()
        addRNGs()
        addPanics()
        if context.incomingMigration {
            // Where libvirt puts it; the stream's fd is named in migrate-incoming.
            _ = passFD(.incomingMigration)
            add("-incoming", "defer")
        }
        add("-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
        add("-msg", "timestamp=on")
    }

    // MARK: - Firmware

    /// UEFI as libvirt 9.0 passes it: the code (pflash0, read-only) and the
    /// domain's variable store (pflash1), each a file node under a raw node.
    mutating func addFirmware() {
        guard let firmware = spec.os.firmware, let loader = firmware.loader, let nvram = firmware.nvram else { return }
        for (index, path, readOnly) in [(0, loader, true), (1, nvram, false)] {
            add("-blockdev", JSONValue.object([
                "driver": "file", "filename": .string(path), "node-name": .string("libvirt-pflash\(index)-storage"),
                "auto-read-only": true, "discard": "unmap",
            ]).description)
            add("-blockdev", JSONValue.object([
                "node-name": .string("libvirt-pflash\(index)-format"), "read-only": .bool(readOnly), "driver": "raw",
                "file": .string("libvirt-pflash\(index)-storage"),
            ]).description)
        }
    }

    // MARK: - Machine, CPU, memory, topology

    mutating func addMachineAndCPU() throws {
        var machine = "\(spec.os.machine),usb=off"
        // libvirt's order (qemuBuildMachineCommandLine).
        if let vmport = spec.features.vmport { machine += ",vmport=\(vmport ? "on" : "off")" }
        if let smm = spec.features.smm { machine += ",smm=\(smm ? "on" : "off")" }
        switch spec.features.ioapicDriver {
        case "kvm"?: machine += ",kernel_irqchip=on"
        case "qemu"?: machine += ",kernel_irqchip=split"
        default: break
        }
        machine += ",dump-guest-core=off"
        if spec.memoryBacking.noSharePages { machine += ",mem-merge=off" }
        // With NUMA the RAM is one backend per node instead of pc.ram.
        if spec.cpu.numaCells.isEmpty { machine += ",memory-backend=pc.ram" }
        if spec.os.firmware != nil { machine += ",pflash0=libvirt-pflash0-format,pflash1=libvirt-pflash1-format" }
        if let hpet = spec.clock.timer(.hpet), hpet.present == false { machine += ",hpet=off" }
        if !spec.features.acpi { machine += ",acpi=off" }
        add("-machine", machine)
        add("-accel", spec.virtType == .kvm ? "kvm" : "tcg")
        add("-cpu", try cpuModel())
        if spec.os.firmware?.secure == true { add("-global", "driver=cfi.pflash01,property=secure,value=on") }
        let mebibytes = spec.memory.maximumKiB / 1024
        if let hotplug = spec.memory.hotplug {
            var memory = "size=\(spec.memory.maximumKiB)k"
            if hotplug.slots > 0 { memory += ",slots=\(hotplug.slots)" }
            add("-m", memory + ",maxmem=\(hotplug.maximumKiB)k")
        } else {
            add("-m", "\(mebibytes)")
        }
        if spec.cpu.numaCells.isEmpty {
            add("-object", JSONValue.object(memoryBackend(id: "pc.ram", bytes: mebibytes << 20, machineRAM: true)).description)
        }
        add("-overcommit", "mem-lock=off")
        var smp = "\(spec.vcpus.current)"
        if spec.vcpus.current != spec.vcpus.maximum { smp += ",maxcpus=\(spec.vcpus.maximum)" }
        if let topology = spec.cpu.topology {
            smp += ",sockets=\(topology.sockets),dies=\(topology.dies),cores=\(topology.cores),threads=\(topology.threads)"
        } else {
            smp += ",sockets=\(spec.vcpus.maximum),cores=1,threads=1"
        }
        add("-smp", smp)
        addNUMA()
    }

    /// The guest RAM's backend (pc.ram, or one per NUMA node) as libvirt
    /// 9.0 chooses and writes it: huge pages (a hugetlbfs file, or memfd's
    /// hugetlb), memfd, a plain file when an access mode is given (the
    /// cell's memAccess, else `<access>`), else anonymous RAM; then share,
    /// the ramblock-id switch (machine RAM not anonymous), prealloc (always
    /// with huge pages), size.
    func memoryBackend(id: String, bytes: UInt64, machineRAM: Bool, cell: Int? = nil, cellAccess: Bool? = nil) -> JSONObject {
        let backing = spec.memoryBacking
        let access = cellAccess ?? backing.sharedAccess
        let type =
            backing.memfd ? "memory-backend-memfd"
            : backing.hugepages || access != nil ? "memory-backend-file" : "memory-backend-ram"
        var object: JSONObject = ["qom-type": .string(type), "id": .string(id)]
        if backing.memfd {
            if backing.hugepages {
                object["hugetlb"] = true
                object["hugetlbsize"] = .number((backing.hugepageSizeKiB ?? 0) * 1024)
            }
            if machineRAM { object["share"] = .bool(access ?? false) } else if let access { object["share"] = .bool(access) }
        } else if backing.hugepages {
            object["mem-path"] = .string(backing.hugepageDirectory ?? "")
            if let access { object["share"] = .bool(access) }
        } else if let access {
            object["mem-path"] = .string(context.runDirectory.memoryBackingDirectory + "/" + id)
            object["share"] = .bool(access)
        }
        if machineRAM, type != "memory-backend-ram" { object["x-use-canonical-path-for-ramblock-id"] = false }
        if backing.preallocate || backing.hugepages { object["prealloc"] = true }
        object["size"] = .number(bytes)
        // <numatune>, as libvirt binds it: restrictive leaves it to the cgroup.
        if let binding = spec.numaTune.binding(cell: cell), binding.mode != .restrictive {
            object["host-nodes"] = .array(binding.hostNodes.map { .number($0) })
            object["policy"] = .string(["strict": "bind", "preferred": "preferred", "interleave": "interleave"][binding.mode.rawValue] ?? "bind")
        }
        return object
    }

    /// `<cpu><numa>` as libvirt 9.0 writes it: a RAM backend and a node per
    /// cell (a `cpus=` per range), then every distance once any is given.
    mutating func addNUMA() {
        let cells = spec.cpu.numaCells
        for cell in cells {
            let backend = "ram-node\(cell.id)"
            add("-object", JSONValue.object(
                memoryBackend(id: backend, bytes: cell.memoryKiB * 1024, machineRAM: false, cell: cell.id, cellAccess: cell.memAccessShared)).description)
            var ranges: [String] = []
            var index = 0
            while index < cell.cpus.count {
                var end = index
                while end + 1 < cell.cpus.count, cell.cpus[end + 1] == cell.cpus[end] + 1 { end += 1 }
                ranges.append(index == end ? "\(cell.cpus[index])" : "\(cell.cpus[index])-\(cell.cpus[end])")
                index = end + 1
            }
            add("-numa", "node,nodeid=\(cell.id)," + ranges.map { "cpus=\($0)" }.joined(separator: ",") + ",memdev=\(backend)")
        }
        guard cells.contains(where: { !$0.distances.isEmpty }) else { return }
        for source in cells {
            for target in cells {
                // libvirt fills the matrix: 10 to itself, symmetric where one side is given, 20 otherwise.
                let value = source.id == target.id ? 10
                    : source.distances[target.id] ?? target.distances[source.id] ?? 20
                add("-numa", "dist,src=\(source.id),dst=\(target.id),val=\(value)")
            }
        }
    }

    func cpuModel() throws -> String {
        switch spec.cpu.mode {
        case .hostPassthrough:
            guard spec.virtType == .kvm else {
                throw ShimError(
                    .unsupported,
                    "CPU mode 'host-passthrough' needs <domain type='kvm'>; with type='qemu' (TCG) use mode='maximum' or a named model (libvirt refuses it too)"
                )
            }
            return "host" + cpuFeatures() + paravirtualFeatures
        case .maximum:
            return "max" + cpuFeatures() + paravirtualFeatures
        case .hostModel:
            // The supervisor expands it from QEMU's report before planning.
            throw ShimError(.internalError, "CPU mode 'host-model' reached the command line unexpanded")
        case .custom:
            return QEMUOption.escape(spec.cpu.model ?? "qemu64") + cpuFeatures() + paravirtualFeatures
        }
    }

    /// What follows the model and its features on `-cpu`, in libvirt's
    /// order: paravirtual clocks, Hyper-V enlightenments, the Hyper-V crash
    /// notifier, then the PMU.
    var paravirtualFeatures: String {
        var text = ""
        for timer in spec.clock.timers {
            switch timer.name {
            case .kvmclock:
                if let present = timer.present { text += ",kvmclock=\(present ? "on" : "off")" }
            case .hypervclock:
                if timer.present == true { text += ",hv-time=on" }
            default:
                break
            }
        }
        if let hyperv = spec.features.hyperv {
            if hyperv.passthrough { text += ",hv-passthrough=on" }
            for enlightenment in DomainSpec.HyperV.Enlightenment.allCases where hyperv.enabled.contains(enlightenment) {
                switch enlightenment {
                case .spinlocks:
                    text += ",hv-spinlocks=0x" + String(hyperv.spinlockRetries, radix: 16)
                case .vendorID:
                    text += ",hv-vendor-id=" + QEMUOption.escape(hyperv.vendorID)
                default:
                    text += ",hv-\(enlightenment.rawValue)=on"
                    if enlightenment == .stimer, hyperv.stimerDirect { text += ",hv-stimer-direct=on" }
                }
            }
        }
        if spec.devices.panics.contains(where: { $0.model == .hyperv }) { text += ",hv-crash" }
        if let kvm = spec.features.kvm {
            if kvm.hidden { text += ",kvm=off" }
            if kvm.pollControl { text += ",kvm-poll-control=on" }
            if kvm.pvIPIOff { text += ",kvm-pv-ipi=off" }
        }
        if let pmu = spec.features.pmu { text += ",pmu=\(pmu ? "on" : "off")" }
        return text
    }

    func cpuFeatures() -> String {
        spec.cpu.features.map { feature in
            let on: Bool
            switch feature.policy {
            case .force, .require, .optional: on = true
            case .disable, .forbid: on = false
            }
            return ",\(QEMUOption.escape(HostCPUModel.qemuName(feature.name)))=\(on ? "on" : "off")"
        }.joined()
    }

    // MARK: - Clock, power, boot

    mutating func addClock() {
        var rtc: String
        switch spec.clock.offset {
        case .utc: rtc = "base=utc"
        case .localtime: rtc = "base=localtime"
        case .variable(let adjustment, let basisLocaltime):
            let seconds = context.now + adjustment + (basisLocaltime ? context.localTimeOffset : 0)
            rtc = "base=\(QEMUOption.isoDate(seconds))"
        }
        if let timer = spec.clock.timer(.rtc) {
            switch timer.track {
            case "guest": rtc += ",clock=vm"
            case "wall": rtc += ",clock=host"
            case "realtime": rtc += ",clock=rt"
            default: break
            }
            if timer.tickPolicy == .catchup { rtc += ",driftfix=slew" }
        }
        add("-rtc", rtc)
        if let pit = spec.clock.timer(.pit), let policy = pit.tickPolicy {
            switch policy {
            case .delay: add("-global", "kvm-pit.lost_tick_policy=delay")
            case .catchup: break  // what kvm-pit does by default; libvirt adds nothing either
            case .discard: add("-global", "kvm-pit.lost_tick_policy=discard")
            case .merge: break
            }
        }
    }

    mutating func addPowerManagement() {
        let device = spec.os.isQ35 ? "ICH9-LPC" : "PIIX4_PM"
        if let mem = spec.power.suspendToMem { add("-global", "\(device).disable_s3=\(mem ? 0 : 1)") }
        if let disk = spec.power.suspendToDisk { add("-global", "\(device).disable_s4=\(disk ? 0 : 1)") }
    }

    mutating func addBoot() {
        var boot = "strict=on"
        if let menu = spec.os.bootMenu {
            boot = "menu=\(menu ? "on" : "off")"
            if menu, let timeout = spec.os.bootMenuTimeoutMilliseconds { boot += ",splash-time=\(timeout)" }
            boot += ",strict=on"
        }
        add("-boot", boot)
        if let kernel = spec.os.kernel { add("-kernel", kernel) }
        if let initrd = spec.os.initrd { add("-initrd", initrd) }
        if let cmdline = spec.os.cmdline { add("-append", cmdline) }
    }

    /// `<os><boot dev=…>` becomes a bootindex on the first device of each kind,
    /// numbered by position; per-device `<boot order>` wins when present.
    func bootIndex(disk index: Int) -> Int? {
        let disk = spec.devices.disks[index]
        if let order = disk.bootOrder { return order }
        for (position, device) in spec.os.bootDevices.enumerated() {
            switch device {
            case .hd where disk.device == .disk:
                if spec.devices.disks.firstIndex(where: { $0.device == .disk }) == index { return position + 1 }
            case .cdrom where disk.device == .cdrom:
                if spec.devices.disks.firstIndex(where: { $0.device == .cdrom }) == index { return position + 1 }
            case .fd where disk.device == .floppy:
                if spec.devices.disks.firstIndex(where: { $0.device == .floppy }) == index { return position + 1 }
            default: continue
            }
        }
        return nil
    }

    func bootIndex(interface index: Int) -> Int? {
        if let order = spec.devices.interfaces[index].bootOrder { return order }
        guard index == 0, let position = spec.os.bootDevices.firstIndex(of: .network) else { return nil }
        return position + 1
    }

    // MARK: - PCI addressing

    func busName(_ bus: Int) -> String {
        spec.devices.controllers.first { $0.kind == .pci && $0.index == bus }?.alias ?? "pci.\(bus)"
    }

    func addPCIAddress(_ address: PCIAddress?, to properties: inout JSONObject) {
        guard let address else { return }
        properties["bus"] = .string(busName(address.bus))
        if address.multifunction { properties["multifunction"] = true }
        let slot = "0x" + String(address.slot, radix: 16)
        properties["addr"] = .string(address.function == 0 ? slot : slot + ".0x" + String(address.function, radix: 16))
    }

    // MARK: - Controllers

    mutating func addControllers() {
        let order: [DomainSpec.Controller.Kind] = [.pci, .usb, .scsi, .ide, .sata, .virtioSerial]
        for kind in order {
            let controllers = spec.devices.controllers.filter { $0.kind == kind }.sorted { $0.index < $1.index }
            for controller in controllers {
                guard let props = controllerProperties(controller) else { continue }
                addDevice(props)
            }
        }
    }

    func controllerProperties(_ controller: DomainSpec.Controller) -> JSONObject? {
        var props = JSONObject()
        switch controller.kind {
        case .pci:
            switch controller.model {
            case "pcie-root-port":
                props["driver"] = .string(controller.deviceName ?? "pcie-root-port")
                if let port = controller.port { props["port"] = .number(port) }
                props["chassis"] = .number(controller.chassis ?? controller.index)
            case "pci-bridge":
                props["driver"] = "pci-bridge"
                props["chassis_nr"] = .number(controller.chassis ?? controller.index)
            case "pcie-to-pci-bridge":
                props["driver"] = "pcie-pci-bridge"
            default:
                return nil  // pci-root and pcie-root are the machine's own
            }
        case .usb:
            switch controller.model {
            case "piix3-uhci": props["driver"] = "piix3-usb-uhci"
            case "qemu-xhci": props["driver"] = "qemu-xhci"
            case "nec-xhci": props["driver"] = "nec-usb-xhci"
            case "ehci": props["driver"] = "usb-ehci"
            case "ich9-ehci1": props["driver"] = "ich9-usb-ehci1"
            case let model? where model.hasPrefix("ich9-uhci"): props["driver"] = .string("ich9-usb-" + model.dropFirst(5))
            default: return nil
            }
            if let start = controller.usbMasterStartPort {
                // A companion: the master's ports, no id of its own (libvirt 9.0).
                props["masterbus"] = .string("\(controller.alias).0")
                props["firstport"] = .number(start)
                addPCIAddress(controller.pciAddress, to: &props)
                return props
            }
            if let ports = controller.ports, controller.model == "qemu-xhci" || controller.model == "nec-xhci" {
                props["p2"] = .number(ports)
                props["p3"] = .number(ports)
            }
        case .ide, .fdc:
            return nil  // built into PIIX3
        case .sata:
            if spec.os.isQ35, controller.index == 0 { return nil }  // built into ICH9
            props["driver"] = "ahci"
        case .scsi:
            props["driver"] = .string(
                ["virtio-scsi": "virtio-scsi-pci", "virtio-non-transitional": "virtio-scsi-pci-non-transitional"][controller.model ?? ""]
                    ?? "lsi")
            props["id"] = .string(controller.alias)
            if let queues = controller.scsiQueues { props["num_queues"] = .number(queues) }
            if let value = controller.scsiCmdPerLun { props["cmd_per_lun"] = .number(value) }
            if let value = controller.scsiMaxSectors { props["max_sectors"] = .number(value) }
            if let value = controller.scsiIOEventFD { props["ioeventfd"] = .bool(value) }
            if let id = controller.scsiIOThread { props["iothread"] = .string("iothread\(id)") }
        case .virtioSerial:
            props["driver"] = .string(controller.model == "virtio-non-transitional" ? "virtio-serial-pci-non-transitional" : "virtio-serial-pci")
            if let ports = controller.ports { props["max_ports"] = .number(ports) }
        }
        props["id"] = .string(controller.alias)
        addPCIAddress(controller.pciAddress, to: &props)
        return props
    }

    // MARK: - Disks

    /// One image as libvirt 9.0 gives it to QEMU: a storage node (the file or
    /// block device) and a format node over it; a qcow2 format node names
    /// its backing node, null when the chain ends there.
    mutating func addImage(
        path: String, type: DomainSpec.Disk.SourceType, format: DomainSpec.Disk.Format, node: Int, readOnly: Bool,
        disk: DomainSpec.Disk, cache: JSONValue?, discard: DomainSpec.Disk.Discard?, backing: JSONValue
    ) {
        var storage: JSONObject = ["driver": .string(type == .block ? "host_device" : "file"), "filename": .string(path)]
        if let io = disk.io { storage["aio"] = .string(io.rawValue) }
        storage["node-name"] = .string("libvirt-\(node)-storage")
        if let cache { storage["cache"] = cache }
        storage["auto-read-only"] = true
        storage["discard"] = "unmap"
        add("-blockdev", JSONValue.object(storage).description)
        var formatNode: JSONObject = ["node-name": .string("libvirt-\(node)-format"), "read-only": .bool(readOnly)]
        if let discard { formatNode["discard"] = .string(discard.rawValue) }
        if let cache { formatNode["cache"] = cache }
        formatNode["driver"] = .string(format.rawValue)
        formatNode["file"] = .string("libvirt-\(node)-storage")
        if format == .qcow2 { formatNode["backing"] = backing }
        add("-blockdev", JSONValue.object(formatNode).description)
    }

    /// The layers under a disk's source, bottom-up so each names the one
    /// below, all read-only; returns what the top image's "backing" is.
    mutating func addBackingChain(_ disk: DomainSpec.Disk, firstNode: Int, cache: JSONValue?) -> JSONValue {
        var below: JSONValue = .null
        for (offset, layer) in disk.backingChain.enumerated().reversed() {
            let node = layer.nodeIndex ?? firstNode + offset
            addImage(
                path: layer.path, type: layer.sourceType, format: layer.format, node: node, readOnly: true, disk: disk,
                cache: cache, discard: nil, backing: below)
            below = .string("libvirt-\(node)-format")
        }
        return below
    }

    /// The floppy drives' boot indexes live on the controller, as libvirt
    /// 9.0 writes them: a `-global` for the PC's built-in isa-fdc, an isa-fdc
    /// device of its own on q35.
    mutating func addFloppyController() {
        let floppies = spec.devices.disks.indices.filter { spec.devices.disks[$0].bus == .fdc }
        guard !floppies.isEmpty else { return }
        var boot: [(drive: String, index: Int)] = []
        for index in floppies {
            guard let bootIndex = bootIndex(disk: index) else { continue }
            boot.append(((spec.devices.disks[index].driveAddress?.unit ?? 0) == 0 ? "A" : "B", bootIndex))
        }
        boot.sort { $0.drive < $1.drive }
        if spec.os.isQ35 {
            var props: JSONObject = ["driver": "isa-fdc"]
            for (drive, index) in boot { props["bootindex\(drive)"] = .number(index) }
            addDevice(props)
        } else {
            for (drive, index) in boot { add("-global", "isa-fdc.bootindex\(drive)=\(index)") }
        }
    }

    mutating func addDisks() throws {
        addFloppyController()
        // Node names count up from the last disk, top image first, then its
        // backing layers: the numbers libvirt gives.
        var firstNode: [Int] = Array(repeating: 0, count: spec.devices.disks.count)
        var next = 1
        for index in spec.devices.disks.indices.reversed() {
            firstNode[index] = next
            next += 1 + spec.devices.disks[index].backingChain.count
        }
        let ports = usbPorts
        for (index, disk) in spec.devices.disks.enumerated() {
            let node = disk.nodeIndex ?? firstNode[index]
            var cache: JSONValue?
            var writeCache: String?
            let effectiveCache: DomainSpec.Disk.Cache? = disk.cache ?? (disk.shareable ? DomainSpec.Disk.Cache.none : nil)
            switch effectiveCache {
            case .none?:
                cache = ["direct": true, "no-flush": false]
                writeCache = "on"
            case .writeback?:
                cache = ["direct": false, "no-flush": false]
                writeCache = "on"
            case .unsafe?:
                cache = ["direct": false, "no-flush": true]
                writeCache = "on"
            case .writethrough?:
                cache = ["direct": false, "no-flush": false]
                writeCache = "off"
            case .directsync?:
                cache = ["direct": true, "no-flush": false]
                writeCache = "off"
            case .default?, nil:
                break
            }
            let format = "libvirt-\(node)-format"
            if let source = disk.source {
                let backing = addBackingChain(disk, firstNode: node + 1, cache: cache)
                addImage(
                    path: source, type: disk.sourceType, format: disk.format, node: node, readOnly: disk.readOnly, disk: disk,
                    cache: cache, discard: disk.discard, backing: backing)
            }
            var device = JSONObject()
            switch disk.bus {
            case .fdc:
                // Its boot index sits on the controller (addFloppyController).
                device["driver"] = "floppy"
                device["unit"] = .number(disk.driveAddress?.unit ?? 0)
            case .virtio:
                device["driver"] = disk.nonTransitional ? "virtio-blk-pci-non-transitional" : "virtio-blk-pci"
                if let id = disk.iothread { device["iothread"] = .string("iothread\(id)") }
                if let ioeventfd = disk.ioeventfd { device["ioeventfd"] = .bool(ioeventfd) }
                if let eventIdx = disk.eventIdx { device["event_idx"] = .bool(eventIdx) }
                if let queues = disk.queues { device["num-queues"] = .number(queues) }
                addPCIAddress(disk.pciAddress, to: &device)
            case .ide:
                device["driver"] = .string(disk.device == .cdrom ? "ide-cd" : "ide-hd")
                let address = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                device["bus"] = .string("ide.\(address.bus)")
                device["unit"] = .number(address.unit)
            case .sata:
                device["driver"] = .string(disk.device == .cdrom ? "ide-cd" : "ide-hd")
                let address = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                let controller = spec.devices.controllers.first { $0.kind == .sata && $0.index == address.controller }
                device["bus"] = .string("\(controller?.alias ?? "sata\(address.controller)").\(address.unit)")
            case .scsi:
                device["driver"] = .string(disk.device == .cdrom ? "scsi-cd" : "scsi-hd")
                let address = disk.driveAddress ?? DriveAddress(controller: 0, bus: 0, unit: 0)
                let controller = spec.devices.controllers.first { $0.kind == .scsi && $0.index == address.controller }
                device["bus"] = .string("\(controller?.alias ?? "scsi\(address.controller)").\(address.bus)")
                if controller?.model == "lsilogic" {
                    // A narrow bus: the unit is the SCSI id, no channel or LUN.
                    device["scsi-id"] = .number(address.unit)
                    // libvirt: the serial when there is one, else "drive-<alias>" (the guest's VPD id).
                    device["device_id"] = .string(disk.serial ?? "drive-\(disk.alias)")
                } else {
                    device["channel"] = .number(address.bus)
                    device["scsi-id"] = .number(address.target)
                    device["lun"] = .number(address.unit)
                    device["device_id"] = .string(disk.serial ?? "drive-\(disk.alias)")
                }
            case .usb:
                device["driver"] = "usb-storage"
                device["bus"] = "usb.0"
                device["port"] = .string(ports[disk.alias] ?? "1")
            }
            if disk.shareable { device["share-rw"] = true }
            if disk.source != nil { device["drive"] = .string(format) }
            device["id"] = .string(disk.alias)
            if disk.bus != .fdc, let bootIndex = bootIndex(disk: index) { device["bootindex"] = .number(bootIndex) }
            // libvirt's order (qemuBuildDiskDeviceProps): block sizes, wwn, vendor,
            // product, removable, write-cache, geometry, serial, error policies.
            if let size = disk.logicalBlockSize { device["logical_block_size"] = .number(size) }
            if let size = disk.physicalBlockSize { device["physical_block_size"] = .number(size) }
            if let wwn = disk.wwn { device["wwn"] = .uint(wwn) }
            if let vendor = disk.vendor { device["vendor"] = .string(vendor) }
            if let product = disk.product { device["product"] = .string(product) }
            if disk.bus == .usb { device["removable"] = .bool(disk.removable ?? false) }
            if disk.bus == .scsi, disk.device == .disk, let removable = disk.removable { device["removable"] = .bool(removable) }
            if let writeCache { device["write-cache"] = .string(writeCache) }
            if let geometry = disk.geometry {
                device["cyls"] = .number(geometry.cylinders)
                device["heads"] = .number(geometry.heads)
                device["secs"] = .number(geometry.sectors)
                if let translation = geometry.translation { device["bios-chs-trans"] = .string(translation) }
            }
            if let serial = disk.serial { device["serial"] = .string(serial) }
            if let policy = disk.writeErrorPolicy { device["werror"] = .string(policy) }
            if let policy = disk.readErrorPolicy { device["rerror"] = .string(policy) }
            addDevice(device)
        }
    }

    // MARK: - Network

    mutating func addInterfaces() {
        for (index, nic) in spec.devices.interfaces.enumerated() {
            let netdevID = "host\(nic.alias)"
            switch nic.kind {
            case .user:
                var netdev: JSONObject = ["type": "user"]
                if let network = nic.userNetwork { netdev["net"] = .string(network) }
                if let prefix = nic.userIPv6Prefix { netdev["ipv6-prefix"] = .string(prefix) }
                if let length = nic.userIPv6PrefixLength { netdev["ipv6-prefixlen"] = .number(length) }
                netdev["id"] = .string(netdevID)
                add("-netdev", JSONValue.object(netdev).description)
            case .ethernet, .bridge, .network, .direct:
                let vnetHeader = nic.model == .virtio
                let queues = nic.virtioTuning.queues ?? 1
                let fd = passFD(
                    nic.kind == .direct
                        ? .macvtap(alias: nic.alias, vnetHeader: vnetHeader)
                        : .tap(name: nic.targetDev, vnetHeader: vnetHeader, managed: nic.managedTap, alias: nic.alias, multiQueue: queues > 1))
                var netdev: JSONObject = ["type": "tap"]
                if queues > 1 {
                    // One tap fd per queue pair, as libvirt passes them.
                    let more = (1..<queues).map { _ in passFD(.tapQueue(alias: nic.alias, vnetHeader: vnetHeader)) }
                    netdev["fds"] = .string(([fd] + more).map(String.init).joined(separator: ":"))
                } else {
                    netdev["fd"] = .string("\(fd)")
                }
                if let sendBuffer = nic.sendBuffer { netdev["sndbuf"] = .number(sendBuffer) }
                netdev["id"] = .string(netdevID)
                add("-netdev", JSONValue.object(netdev).description)
            case .mcast, .server, .client, .udp:
                // libvirt 9.0's socket netdevs: mcast, listen, connect, udp with localaddr.
                let key = ["mcast": "mcast", "server": "listen", "client": "connect", "udp": "udp"][nic.kind.rawValue] ?? "mcast"
                var netdev: JSONObject = ["type": "socket", key: .string(nic.socketEndpoint ?? "")]
                if let local = nic.socketLocal { netdev["localaddr"] = .string(local) }
                netdev["id"] = .string(netdevID)
                add("-netdev", JSONValue.object(netdev).description)
            }
            // libvirt's key order (qemuBuildNicDevProps): the virtio knobs before netdev.
            var device: JSONObject = [
                "driver": .string(QEMUCommandLine.nicDriver(nic.model) + (nic.nonTransitional ? "-non-transitional" : ""))
            ]
            let tuning = nic.virtioTuning
            if let tx = tuning.tx { device["tx"] = .string(tx) }
            if let ioeventfd = tuning.ioeventfd { device["ioeventfd"] = .bool(ioeventfd) }
            if let eventIdx = tuning.eventIdx { device["event_idx"] = .bool(eventIdx) }
            if let queues = tuning.queues, queues > 1 {
                // A vector per queue in each direction, one for config, one for control.
                device["mq"] = true
                device["vectors"] = .number(2 * queues + 2)
            }
            if let size = tuning.rxQueueSize { device["rx_queue_size"] = .number(size) }
            if let size = tuning.txQueueSize { device["tx_queue_size"] = .number(size) }
            if let mtu = nic.mtu, nic.model == .virtio { device["host_mtu"] = .number(mtu) }
            device["netdev"] = .string(netdevID)
            device["id"] = .string(nic.alias)
            device["mac"] = .string(nic.mac)
            if let bootIndex = bootIndex(interface: index) { device["bootindex"] = .number(bootIndex) }
            addPCIAddress(nic.pciAddress, to: &device)
            // libvirt's qemuBuildRomProps, after the address.
            if nic.romEnabled == false {
                device["romfile"] = ""
            } else {
                if let bar = nic.romBar { device["rombar"] = .number(bar ? 1 : 0) }
                if let file = nic.romFile { device["romfile"] = .string(file) }
            }
            addDevice(device)
        }
    }

    static func nicDriver(_ model: DomainSpec.Interface.Model) -> String {
        switch model {
        case .virtio: return "virtio-net-pci"
        case .e1000: return "e1000"
        case .e1000e: return "e1000e"
        case .rtl8139: return "rtl8139"
        }
    }

    // MARK: - Character devices

    mutating func chardevOptions(_ device: DomainSpec.CharDevice, id: String) -> String {
        var options: String
        switch device.backend {
        case .pty:
            options = "pty,id=\(id)"
        case .null:
            options = "null,id=\(id)"
        case .file(let path, let append):
            let set = nextFDSet
            nextFDSet += 1
            let fd = passFD(.file(path: path, append: append ?? false))
            add("-add-fd", "set=\(set),fd=\(fd),opaque=\(QEMUOption.escape(device.alias))-source")
            options = "file,id=\(id),path=/dev/fdset/\(set),append=on"
        case .unixListen(let path):
            let fd = passFD(.unixListener(path: path))
            options = "socket,id=\(id),fd=\(fd),server=on,wait=off"
        case .unixConnect(let path, let reconnect):
            options = "socket,id=\(id),path=\(QEMUOption.escape(path))"
            if let reconnect { options += ",reconnect=\(reconnect)" }
        case .tcp(let host, let port, let listen, let telnet, let reconnect):
            options = "socket,id=\(id),host=\(QEMUOption.escape(host)),port=\(port)"
            if telnet { options += ",telnet=on" }
            if listen { options += ",server=on,wait=off" }
            if let reconnect { options += ",reconnect=\(reconnect)" }
        case .udp(let host, let port, let localHost, let localPort):
            options = "udp,id=\(id),host=\(QEMUOption.escape(host)),port=\(port)"
            if let localHost { options += ",localaddr=\(QEMUOption.escape(localHost))" }
            if let localPort { options += ",localport=\(localPort)" }
        case .spicevmc:
            options = "spicevmc,id=\(id),name=vdagent"
        }
        if let log = device.logFile {
            let set = nextFDSet
            nextFDSet += 1
            let fd = passFD(.file(path: log, append: device.logAppend ?? false))
            add("-add-fd", "set=\(set),fd=\(fd),opaque=\(QEMUOption.escape(device.alias))-log")
            options += ",logfile=/dev/fdset/\(set),logappend=on"
        }
        return options
    }

    mutating func addCharDevices() {
        for serial in spec.devices.serials {
            let id = "char\(serial.alias)"
            add("-chardev", chardevOptions(serial, id: id))
            addDevice([
                "driver": "isa-serial", "chardev": .string(id), "id": .string(serial.alias),
                "index": .number(serial.targetPort ?? 0),
            ])
        }
        for parallel in spec.devices.parallels {
            let id = "char\(parallel.alias)"
            add("-chardev", chardevOptions(parallel, id: id))
            addDevice(["driver": "isa-parallel", "chardev": .string(id), "id": .string(parallel.alias)])
        }
        for channel in spec.devices.channels {
            let id = "char\(channel.alias)"
            add("-chardev", chardevOptions(channel, id: id))
            var props: JSONObject = [
                "driver": "virtserialport", "bus": "virtio-serial0.0", "nr": .number(channel.targetPort ?? 1),
                "chardev": .string(id), "id": .string(channel.alias),
            ]
            if let name = channel.targetName { props["name"] = .string(name) }
            addDevice(props)
        }
    }

    // MARK: - Input, graphics, video

    /// USB ports by device alias, as DomainDefaults assigned them.
    var usbPorts: [String: String] {
        var ports: [String: String] = [:]
        let devices = spec.devices
        for disk in devices.disks where disk.bus == .usb { ports[disk.alias] = disk.usbPort }
        for input in devices.inputs where input.bus == .usb { ports[input.alias] = input.usbPort }
        for sound in devices.sounds where sound.model == .usb { ports[sound.alias] = sound.usbPort }
        for redirdev in devices.redirdevs { ports[redirdev.alias] = redirdev.usbPort }
        return ports
    }

    /// USB hubs, after the memory devices and before the disks, as libvirt orders them.
    mutating func addHubs() {
        for hub in spec.devices.hubs {
            addDevice(["driver": "usb-hub", "id": .string(hub.alias), "bus": "usb.0", "port": .string(hub.usbPort ?? "1")])
        }
    }

    mutating func addInputs() {
        let ports = usbPorts
        for input in spec.devices.inputs {
            switch input.bus {
            case .ps2:
                continue  // part of the chipset
            case .usb:
                let driver = ["tablet": "usb-tablet", "mouse": "usb-mouse", "keyboard": "usb-kbd"][input.kind.rawValue] ?? "usb-tablet"
                addDevice(["driver": .string(driver), "id": .string(input.alias), "bus": "usb.0", "port": .string(ports[input.alias] ?? "1")])
            case .virtio:
                let driver = "virtio-\(input.kind == .tablet ? "tablet" : input.kind.rawValue)-pci"
                var props: JSONObject = ["driver": .string(driver), "id": .string(input.alias)]
                addPCIAddress(input.pciAddress, to: &props)
                addDevice(props)
            }
        }
    }

    /// The `-spice` options after the listener, in libvirt 9.0's order
    /// (qemuBuildGraphicsSPICECommandLine).
    static func spiceOptions(_ spice: DomainSpec.Graphics.Spice) -> [String] {
        var options: [String] = []
        if let agent = spice.agentMouse { options.append("agent-mouse=\(agent ? "on" : "off")") }
        options.append("disable-ticketing=on")
        if let value = spice.imageCompression { options.append("image-compression=\(value)") }
        if let value = spice.jpegCompression { options.append("jpeg-wan-compression=\(value)") }
        if let value = spice.zlibCompression { options.append("zlib-glz-wan-compression=\(value)") }
        if let value = spice.playbackCompression { options.append("playback-compression=\(value)") }
        if let value = spice.streamingMode { options.append("streaming-video=\(value)") }
        if spice.copyPaste == false { options.append("disable-copy-paste=on") }
        if spice.fileTransfer == false { options.append("disable-agent-file-xfer=on") }
        options.append("seamless-migration=on")
        return options
    }

    mutating func addGraphics() {
        // In document order, as libvirt writes them.
        for graphics in spec.devices.graphics {
            if graphics.kind == .spice {
                // libvirt 9.0's spelling: port=0 without a listener, the short
                // `unix` flag for a socket.
                var options: String
                switch graphics.listen {
                case .address(let address):
                    options = "port=\(graphics.port ?? 5900),addr=\(QEMUOption.escape(address))"
                case .socket(let path):
                    options = "unix,addr=\(QEMUOption.escape(path))"
                case .none:
                    options = "port=0"
                }
                add("-spice", ([options] + Self.spiceOptions(graphics.spice)).joined(separator: ","))
                continue
            }
            switch graphics.listen {
            case .address(let address):
                let display = (graphics.port ?? 5900) - 5900
                let host = address.contains(":") ? "[\(address)]" : address
                add("-vnc", "\(QEMUOption.escape(host)):\(display),audiodev=audio1")
            case .socket(let path):
                add("-vnc", "vnc=unix:\(QEMUOption.escape(path)),audiodev=audio1")
            case .none:
                add("-vnc", "none,audiodev=audio1")
            }
        }
    }

    mutating func addVideos() {
        for (index, video) in spec.devices.videos.enumerated() {
            var props = JSONObject()
            let primary = index == 0
            switch video.model {
            case .none:
                continue
            case .vga:
                props["driver"] = "VGA"
                props["id"] = .string(video.alias)
                props["vgamem_mb"] = .number((video.vramKiB ?? 16384) / 1024)
            case .cirrus:
                props["driver"] = "cirrus-vga"
                props["id"] = .string(video.alias)
            case .bochs:
                props["driver"] = "bochs-display"
                props["id"] = .string(video.alias)
                props["vgamem"] = .number((video.vramKiB ?? 16384) * 1024)
            case .virtio:
                props["driver"] = .string(primary ? "virtio-vga" : "virtio-gpu-pci")
                props["id"] = .string(video.alias)
                if let heads = video.heads { props["max_outputs"] = .number(heads) }
            case .qxl:
                props["driver"] = .string(primary ? "qxl-vga" : "qxl")
                props["id"] = .string(video.alias)
                props["max_outputs"] = .number(video.heads ?? 1)
                props["ram_size"] = .number((video.ramKiB ?? 65536) * 1024)
                props["vram_size"] = .number((video.vramKiB ?? 65536) * 1024)
                props["vram64_size_mb"] = .number((video.vram64KiB ?? 0) / 1024)
                props["vgamem_mb"] = .number((video.vgamemKiB ?? 16384) / 1024)
            }
            addPCIAddress(video.pciAddress, to: &props)
            addDevice(props)
        }
    }

    /// USB redirection over SPICE: a spicevmc chardev and a usb-redir device
    /// per `<redirdev>`, on the USB port libvirt gives it.
    mutating func addRedirdevs() {
        let ports = usbPorts
        for redirdev in spec.devices.redirdevs {
            let chardev = "char\(redirdev.alias)"
            add("-chardev", "spicevmc,id=\(chardev),name=usbredir")
            var props: JSONObject = ["driver": "usb-redir", "chardev": .string(chardev), "id": .string(redirdev.alias), "bus": "usb.0"]
            if let port = ports[redirdev.alias] { props["port"] = .string(port) }
            addDevice(props)
        }
    }

    // MARK: - Memory devices

    /// DIMMs and virtio-mem devices as libvirt 9.0 writes them: a RAM
    /// backend named after the device (`mem<alias>`), then the device, in
    /// document order (QEMU places DIMMs in that order).
    mutating func addMemoryDevices() {
        for device in spec.devices.memoryDevices {
            let backend = "mem\(device.alias)"
            var object: JSONObject = ["qom-type": "memory-backend-ram", "id": .string(backend)]
            var props: JSONObject
            switch device.model {
            case .dimm:
                props = ["driver": "pc-dimm", "node": .number(device.node), "memdev": .string(backend), "id": .string(device.alias)]
                if let slot = device.slot { props["slot"] = .number(slot) }
                if let base = device.base { props["addr"] = .number(Int(clamping: base)) }
            case .virtioMem:
                // The guest plugs blocks as asked; nothing is reserved up front.
                object["reserve"] = false
                props = [
                    "driver": "virtio-mem-pci", "node": .number(device.node),
                    "block-size": .number(Int(clamping: device.blockKiB * 1024)),
                    "requested-size": .number(Int(clamping: device.requestedKiB * 1024)),
                    "memdev": .string(backend), "id": .string(device.alias),
                ]
                addPCIAddress(device.pciAddress, to: &props)
            }
            object["size"] = .number(Int(clamping: device.sizeKiB * 1024))
            add("-object", JSONValue.object(object).description)
            addDevice(props)
        }
    }

    // MARK: - Balloon, RNG, panic

    mutating func addBalloon() {
        guard let balloon = spec.devices.memballoon, balloon.model == .virtio else { return }
        var props: JSONObject = [
            "driver": .string(balloon.nonTransitional ? "virtio-balloon-pci-non-transitional" : "virtio-balloon-pci"),
            "id": .string(balloon.alias),
        ]
        addPCIAddress(balloon.pciAddress, to: &props)
        if let deflate = balloon.autodeflate { props["deflate-on-oom"] = .bool(deflate) }
        if let reporting = balloon.freePageReporting { props["free-page-reporting"] = .bool(reporting) }
        addDevice(props)
    }

    mutating func addRNGs() {
        for rng in spec.devices.rngs {
            let objectID = "obj\(rng.alias)"
            switch rng.backend {
            case .random(let path):
                add("-object", JSONValue.object(["qom-type": "rng-random", "id": .string(objectID), "filename": .string(path)]).description)
            case .builtin:
                add("-object", JSONValue.object(["qom-type": "rng-builtin", "id": .string(objectID)]).description)
            }
            var props: JSONObject = [
                "driver": .string(rng.nonTransitional ? "virtio-rng-pci-non-transitional" : "virtio-rng-pci"),
                "rng": .string(objectID), "id": .string(rng.alias),
            ]
            if let bytes = rng.rateBytes {
                props["max-bytes"] = .number(bytes)
                props["period"] = .number(rng.ratePeriodMilliseconds ?? 1000)
            }
            addPCIAddress(rng.pciAddress, to: &props)
            addDevice(props)
        }
    }

    mutating func addIOMMU() {
        guard let iommu = spec.devices.iommu else { return }
        if iommu.model == .virtio {
            var props: JSONObject = ["driver": "virtio-iommu", "id": .string(iommu.alias)]
            addPCIAddress(iommu.pciAddress, to: &props)
            addDevice(props)
            return
        }
        var props: JSONObject = ["driver": "intel-iommu", "id": .string(iommu.alias)]
        // libvirt's order; the two interrupt settings are QEMU's OnOffAuto, hence strings.
        if let value = iommu.interruptRemapping { props["intremap"] = .string(value ? "on" : "off") }
        if let value = iommu.cachingMode { props["caching-mode"] = .bool(value) }
        if let value = iommu.extendedInterruptMode { props["eim"] = .string(value ? "on" : "off") }
        if let value = iommu.deviceIOTLB { props["device-iotlb"] = .bool(value) }
        if let value = iommu.addressWidthBits { props["aw-bits"] = .number(value) }
        addDevice(props)
    }

    mutating func addSounds() {
        let ports = usbPorts
        for sound in spec.devices.sounds {
            var props: JSONObject
            switch sound.model {
            case .ac97, .es1370, .sb16:
                let driver = ["ac97": "AC97", "es1370": "ES1370", "sb16": "sb16"][sound.model.rawValue] ?? "AC97"
                props = ["driver": .string(driver), "id": .string(sound.alias), "audiodev": "audio1"]
            case .usb:
                props = [
                    "driver": "usb-audio", "id": .string(sound.alias), "audiodev": "audio1", "bus": "usb.0",
                    "port": .string(ports[sound.alias] ?? "1"),
                ]
            case .ich6, .ich9:
                props = ["driver": .string(sound.model == .ich9 ? "ich9-intel-hda" : "intel-hda"), "id": .string(sound.alias)]
            }
            addPCIAddress(sound.pciAddress, to: &props)
            addDevice(props)
            guard sound.model.isHDA else { continue }
            for (cad, codec) in (sound.codecs.isEmpty ? ["duplex"] : sound.codecs).enumerated() {
                addDevice([
                    "driver": .string("hda-\(codec)"), "id": .string("\(sound.alias)-codec\(cad)"),
                    "bus": .string("\(sound.alias).0"), "cad": .number(cad), "audiodev": "audio1",
                ])
            }
        }
    }

    mutating func addWatchdog() {
        guard let watchdog = spec.devices.watchdog else { return }
        var props: JSONObject = ["driver": .string(watchdog.model.rawValue), "id": .string(watchdog.alias)]
        addPCIAddress(watchdog.pciAddress, to: &props)
        addDevice(props)
        add("-watchdog-action", watchdog.action)
    }

    mutating func addPanics() {
        for panic in spec.devices.panics where panic.model == .isa {
            var props: JSONObject = ["driver": "pvpanic"]
            if let ioBase = panic.ioBase { props["ioport"] = .number(ioBase) }
            addDevice(props)
        }
    }
}

/// QEMU's key=value option syntax.
public enum QEMUOption {
    /// Doubles commas so a value cannot end its option and start another
    /// (`/a,file=/etc/shadow` stays one value).
    public static func escape(_ value: String) -> String {
        value.replacingAll(",", with: ",,")
    }

    /// "YYYY-MM-DDTHH:MM:SS" in UTC, for `-rtc base=`.
    static func isoDate(_ unixSeconds: Int64) -> String {
        let days = unixSeconds >= 0 ? unixSeconds / 86400 : (unixSeconds - 86399) / 86400
        let secondsOfDay = unixSeconds - days * 86400
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondsOfDay / 3600, 2)):\(pad(secondsOfDay % 3600 / 60, 2)):\(pad(secondsOfDay % 60, 2))"
    }
}
