/// Gives every PCI device the address libvirt 9.0 would give it.
///
/// The order, reserved slots and implicit buses follow libvirt's
/// qemuDomainAssignPCIAddresses, measured on libvirt 9.0 (see
/// docs/reference/libvirt-9.0-hardware.md): on pc, one flat bus (plus
/// pci-bridges when it fills up); on q35, one pcie-root-port per PCIe device,
/// a pcie-pci-bridge for conventional PCI devices, and one spare root port for
/// hotplug when libvirt would add it.
struct PCIAddressAssigner {
    let file: String

    enum Device: Equatable {
        case controller(Int)
        case interface(Int)
        case disk(Int)
        case balloon
        case rng(Int)
        case watchdog
        case sound(Int)
        case video(Int)
        case input(Int)
        case memory(Int)
    }

    struct Consumer {
        var device: Device
        var name: String
        /// On q35: a PCI Express endpoint, which needs a root port of its own.
        var isExpress: Bool
    }

    func error(_ message: String, at line: Int? = nil) -> ShimError {
        ShimError.afterParsing(file: file, line: line, message)
    }

    func assign(_ spec: inout DomainSpec) throws {
        // A chipset address: the first ich9 sound card is the ICH9's own HDA at 00:1b.0.
        if spec.os.isQ35, let first = spec.devices.sounds.firstIndex(where: { $0.model == .ich9 }),
            spec.devices.sounds[first].pciAddress == nil,
            !explicitAddresses(spec).contains(where: { $0.address.bus == 0 && $0.address.slot == 0x1B })
        {
            spec.devices.sounds[first].pciAddress = PCIAddress(bus: 0, slot: 0x1B)
        }
        var used = Set<PCIAddress.Key>()
        try reserveExplicit(spec, &used)
        // Companions of a master placed by the document join its slot.
        for master in spec.devices.controllers.indices where spec.devices.controllers[master].model == "ich9-ehci1" {
            guard let slot = spec.devices.controllers[master].pciAddress else { continue }
            let index = spec.devices.controllers[master].index
            for i in spec.devices.controllers.indices {
                let c = spec.devices.controllers[i]
                guard c.kind == .usb, c.index == index, c.usbMasterStartPort != nil, c.pciAddress == nil else { continue }
                let address = Self.companionAddress(c, slot: slot)
                guard used.insert(address.key).inserted else {
                    throw error("\(c.model ?? "companion") cannot take function \(address.function) of its master's slot: it is in use; give it an <address>", at: c.xmlLine)
                }
                spec.devices.controllers[i].pciAddress = address
            }
        }
        if spec.os.isQ35 {
            try assignQ35(&spec, &used)
        } else {
            try assignPC(&spec, &used)
        }
    }

    // MARK: - Explicit addresses

    /// Addresses given in the document: who (for messages), where, and the element's line.
    func explicitAddresses(_ spec: DomainSpec) -> [(name: String, address: PCIAddress, line: Int?)] {
        var all: [(name: String, address: PCIAddress, line: Int?)] = []
        for c in spec.devices.controllers { if let a = c.pciAddress { all.append(("controller \(c.kind.rawValue) \(c.index)", a, c.xmlLine)) } }
        for n in spec.devices.interfaces { if let a = n.pciAddress { all.append(("interface \(n.mac)", a, n.xmlLine)) } }
        for d in spec.devices.disks { if let a = d.pciAddress { all.append(("disk \(d.targetDev)", a, d.xmlLine)) } }
        if let m = spec.devices.memballoon, let a = m.pciAddress { all.append(("memballoon", a, m.xmlLine)) }
        for (i, r) in spec.devices.rngs.enumerated() { if let a = r.pciAddress { all.append(("rng \(i)", a, r.xmlLine)) } }
        if let w = spec.devices.watchdog, let a = w.pciAddress { all.append(("watchdog", a, w.xmlLine)) }
        if let i = spec.devices.iommu, let a = i.pciAddress { all.append(("iommu", a, i.xmlLine)) }
        for (i, s) in spec.devices.sounds.enumerated() { if let a = s.pciAddress { all.append(("sound \(i)", a, s.xmlLine)) } }
        for (i, v) in spec.devices.videos.enumerated() { if let a = v.pciAddress { all.append(("video \(i)", a, v.xmlLine)) } }
        for (i, input) in spec.devices.inputs.enumerated() { if let a = input.pciAddress { all.append(("input \(i)", a, input.xmlLine)) } }
        for (i, m) in spec.devices.memoryDevices.enumerated() { if let a = m.pciAddress { all.append(("memory \(i)", a, m.xmlLine)) } }
        return all
    }

    func reserveExplicit(_ spec: DomainSpec, _ used: inout Set<PCIAddress.Key>) throws {
        let buses = Set(spec.devices.controllers.filter { $0.kind == .pci }.map(\.index))
        for (name, address, line) in explicitAddresses(spec) {
            guard buses.contains(address.bus) else {
                throw error("\(name) is on PCI bus \(address.bus), but no PCI controller has index \(address.bus)", at: line)
            }
            if !spec.os.isQ35, address.bus == 0, address.slot <= 1, !(name.hasPrefix("controller usb 0") && address == PCIAddress(bus: 0, slot: 1, function: 2)) {
                if !(name.hasPrefix("controller ide") && address == PCIAddress(bus: 0, slot: 1, function: 1)) {
                    throw error("\(name): PCI slots 0 and 1 of bus 0 belong to the i440FX chipset", at: line)
                }
            }
            if spec.os.isQ35, address.bus == 0, address.slot == 0x1F || address.slot == 0 {
                if !(name.hasPrefix("controller sata 0") && address == PCIAddress(bus: 0, slot: 0x1F, function: 2)) {
                    throw error("\(name): PCI slots 0 and 0x1f of pcie.0 belong to the Q35 chipset", at: line)
                }
            }
            if let bus = spec.devices.controllers.first(where: { $0.kind == .pci && $0.index == address.bus }),
                bus.model == "pcie-root-port", address.slot != 0
            {
                throw error("\(name): a pcie-root-port has a single slot, 0 (got slot \(address.slot))", at: line)
            }
            guard used.insert(address.key).inserted else {
                throw error("\(name): PCI address \(address) is used twice", at: line)
            }
        }
    }

    // MARK: - Ordering (libvirt's qemuDomainAssignDevicePCISlots)

    func consumers(_ spec: DomainSpec) -> [Consumer] {
        var list: [Consumer] = []
        let isQ35 = spec.os.isQ35
        // 1. PCI controllers (bridges, root ports) are placed by the bus logic itself.
        // 2. Interfaces in document order.
        for (i, nic) in spec.devices.interfaces.enumerated() where nic.pciAddress == nil {
            list.append(Consumer(device: .interface(i), name: nic.alias, isExpress: nic.model == .virtio || nic.model == .e1000e))
        }
        // Sound cards (all conventional PCI) right after the interfaces.
        for (i, sound) in spec.devices.sounds.enumerated() where sound.pciAddress == nil && sound.model.isPCI {
            list.append(Consumer(device: .sound(i), name: sound.alias, isExpress: false))
        }
        // 3. Other controllers in controller-array order.
        for (i, c) in spec.devices.controllers.enumerated() where c.pciAddress == nil {
            switch c.kind {
            case .pci, .ide, .fdc:
                continue
            case .usb:
                if c.model == "none" { continue }
                if c.model == "piix3-uhci", c.index == 0, !isQ35 { continue }  // fixed at 1.2
                // USB2 companions go into their master's slot (placeUSB2Companions).
                if c.usbMasterStartPort != nil { continue }
                if isQ35, c.model == "ich9-ehci1", c.index == 0 { continue }  // fixed at 1d.7
                list.append(Consumer(device: .controller(i), name: c.alias, isExpress: c.model == "qemu-xhci" || c.model == "nec-xhci"))
            case .sata:
                if isQ35, c.index == 0 { continue }  // built into ICH9 at 1f.2
                list.append(Consumer(device: .controller(i), name: c.alias, isExpress: false))
            case .virtioSerial:
                list.append(Consumer(device: .controller(i), name: c.alias, isExpress: true))
            case .scsi:
                list.append(Consumer(device: .controller(i), name: c.alias, isExpress: c.model != "lsilogic"))
            }
        }
        // 4. Virtio disks in disk-array order.
        for (i, disk) in spec.devices.disks.enumerated() where disk.bus == .virtio && disk.pciAddress == nil {
            list.append(Consumer(device: .disk(i), name: disk.alias, isExpress: true))
        }
        // 5. Balloon, RNGs, secondary videos, virtio inputs.
        if let balloon = spec.devices.memballoon, balloon.model == .virtio, balloon.pciAddress == nil {
            list.append(Consumer(device: .balloon, name: balloon.alias, isExpress: true))
        }
        for (i, rng) in spec.devices.rngs.enumerated() where rng.pciAddress == nil {
            list.append(Consumer(device: .rng(i), name: rng.alias, isExpress: true))
        }
        // 6. The watchdog (i6300esb: conventional PCI).
        if let watchdog = spec.devices.watchdog, watchdog.model == .i6300esb, watchdog.pciAddress == nil {
            list.append(Consumer(device: .watchdog, name: watchdog.alias, isExpress: false))
        }
        for (i, video) in spec.devices.videos.enumerated() where i > 0 && video.pciAddress == nil {
            list.append(Consumer(device: .video(i), name: video.alias, isExpress: video.model == .virtio))
        }
        for (i, input) in spec.devices.inputs.enumerated() where input.bus == .virtio && input.pciAddress == nil {
            list.append(Consumer(device: .input(i), name: input.alias, isExpress: true))
        }
        // 7. virtio-mem devices, last.
        for (i, memory) in spec.devices.memoryDevices.enumerated() where memory.model == .virtioMem && memory.pciAddress == nil {
            list.append(Consumer(device: .memory(i), name: memory.alias, isExpress: true))
        }
        return list
    }

    func set(_ device: Device, _ address: PCIAddress, in spec: inout DomainSpec) {
        switch device {
        case .controller(let i):
            spec.devices.controllers[i].pciAddress = address
            if spec.devices.controllers[i].model == "ich9-ehci1" { placeUSB2Group(master: i, slot: address, in: &spec) }
        case .interface(let i): spec.devices.interfaces[i].pciAddress = address
        case .disk(let i): spec.devices.disks[i].pciAddress = address
        case .balloon: spec.devices.memballoon?.pciAddress = address
        case .rng(let i): spec.devices.rngs[i].pciAddress = address
        case .watchdog: spec.devices.watchdog?.pciAddress = address
        case .sound(let i): spec.devices.sounds[i].pciAddress = address
        case .video(let i): spec.devices.videos[i].pciAddress = address
        case .input(let i): spec.devices.inputs[i].pciAddress = address
        case .memory(let i): spec.devices.memoryDevices[i].pciAddress = address
        }
    }

    /// An ich9-ehci1 master and its ich9-uhci companions share one slot, as
    /// on real ICH9 and as libvirt places them: the master at function 7,
    /// uhciN at function N−1, multifunction on function 0.
    func placeUSB2Group(master: Int, slot: PCIAddress, in spec: inout DomainSpec) {
        let index = spec.devices.controllers[master].index
        spec.devices.controllers[master].pciAddress = PCIAddress(bus: slot.bus, slot: slot.slot, function: 7)
        let companions = spec.devices.controllers.indices.filter {
            let c = spec.devices.controllers[$0]
            return c.kind == .usb && c.index == index && c.usbMasterStartPort != nil && c.pciAddress == nil
        }
        for i in companions {
            spec.devices.controllers[i].pciAddress = Self.companionAddress(spec.devices.controllers[i], slot: slot)
        }
    }

    /// ich9-uhciN sits at function N−1 of its master's slot; function 0 is multifunction.
    static func companionAddress(_ companion: DomainSpec.Controller, slot: PCIAddress) -> PCIAddress {
        let number = Int(companion.model?.last.map(String.init) ?? "1") ?? 1
        var address = PCIAddress(bus: slot.bus, slot: slot.slot, function: number - 1)
        address.multifunction = number == 1
        return address
    }

    func needsPrimaryVideoSlot(_ spec: DomainSpec) -> Bool {
        guard let video = spec.devices.videos.first else { return false }
        return video.model != .none && video.pciAddress == nil
    }

    // MARK: - pc (i440FX)

    func assignPC(_ spec: inout DomainSpec, _ used: inout Set<PCIAddress.Key>) throws {
        // Chipset: host bridge at 0, PIIX3 (ISA, IDE, USB, PM) at slot 1.
        for function in 0...7 { used.insert(PCIAddress(bus: 0, slot: 0, function: function).key) }
        for function in 0...7 { used.insert(PCIAddress(bus: 0, slot: 1, function: function).key) }
        for index in spec.devices.controllers.indices where spec.devices.controllers[index].pciAddress == nil {
            let c = spec.devices.controllers[index]
            if c.kind == .usb, c.model == "piix3-uhci", c.index == 0 {
                spec.devices.controllers[index].pciAddress = PCIAddress(bus: 0, slot: 1, function: 2)
            } else if c.kind == .ide, c.index == 0 {
                spec.devices.controllers[index].pciAddress = PCIAddress(bus: 0, slot: 1, function: 1)
            }
        }

        func freeSlot(on bus: Int, from: Int = 1) -> Int? {
            (from...31).first { slot in !(0...7).contains { used.contains(PCIAddress(bus: bus, slot: slot, function: $0).key) } }
        }
        // The primary video takes slot 2, or the first free slot, before anything else.
        if needsPrimaryVideoSlot(spec) {
            let slot = used.contains(PCIAddress(bus: 0, slot: 2).key) ? freeSlot(on: 0) : 2
            guard let slot else { throw error("no free PCI slot for the primary video device") }
            let address = PCIAddress(bus: 0, slot: slot)
            used.insert(address.key)
            spec.devices.videos[0].pciAddress = address
        }

        var list = consumers(spec)
        var bridgeBuses = spec.devices.controllers.filter { $0.kind == .pci && $0.model == "pci-bridge" }.map(\.index).sorted()
        // Bridges the user declared without an address go first, like all PCI controllers.
        var bridgesToPlace = spec.devices.controllers.indices.filter {
            spec.devices.controllers[$0].kind == .pci && spec.devices.controllers[$0].model == "pci-bridge"
                && spec.devices.controllers[$0].pciAddress == nil
        }
        // Add pci-bridges while the devices plus one slot kept for a future bridge do not fit.
        func freeSlotCount() -> Int {
            ([0] + bridgeBuses).reduce(0) { count, bus in
                count + (1...31).filter { slot in !(0...7).contains { used.contains(PCIAddress(bus: bus, slot: slot, function: $0).key) } }.count
            }
        }
        while list.count + bridgesToPlace.count + 1 > freeSlotCount() {
            let index = (spec.devices.controllers.map(\.index).max() ?? 0) + 1
            var bridge = DomainSpec.Controller(kind: .pci, index: index, model: "pci-bridge")
            bridge.implicit = true
            bridge.chassis = index
            bridge.alias = "pci.\(index)"
            spec.devices.controllers.append(bridge)
            bridgesToPlace.append(spec.devices.controllers.count - 1)
            bridgeBuses.append(index)
            if bridgeBuses.count > 30 { throw error("too many PCI devices for the i440FX machine") }
        }
        func place(_ name: String) throws -> PCIAddress {
            for bus in [0] + bridgeBuses {
                if let slot = freeSlot(on: bus) {
                    let address = PCIAddress(bus: bus, slot: slot)
                    used.insert(address.key)
                    return address
                }
            }
            throw error("no free PCI slot for \(name)")
        }
        for index in bridgesToPlace {
            let address = try place("pci-bridge \(spec.devices.controllers[index].index)")
            spec.devices.controllers[index].pciAddress = address
            if spec.devices.controllers[index].chassis == nil {
                spec.devices.controllers[index].chassis = spec.devices.controllers[index].index
            }
        }
        list = consumers(spec)
        for consumer in list {
            set(consumer.device, try place(consumer.name), in: &spec)
        }
    }

    // MARK: - q35

    func assignQ35(_ spec: inout DomainSpec, _ used: inout Set<PCIAddress.Key>) throws {
        // Chipset: host bridge at 0; LPC, SATA and SMBus at 0x1f.
        for function in 0...7 {
            used.insert(PCIAddress(bus: 0, slot: 0, function: function).key)
            used.insert(PCIAddress(bus: 0, slot: 0x1F, function: function).key)
        }
        if let index = spec.devices.controllers.firstIndex(where: { $0.kind == .sata && $0.index == 0 }),
            spec.devices.controllers[index].pciAddress == nil
        {
            spec.devices.controllers[index].pciAddress = PCIAddress(bus: 0, slot: 0x1F, function: 2)
        }
        // USB2 (ich9-ehci1 and companions) is the ICH9's own at 00:1d.
        if let index = spec.devices.controllers.firstIndex(where: { $0.kind == .usb && $0.index == 0 && $0.model == "ich9-ehci1" }),
            spec.devices.controllers[index].pciAddress == nil
        {
            for function in 0...7 { used.insert(PCIAddress(bus: 0, slot: 0x1D, function: function).key) }
            placeUSB2Group(master: index, slot: PCIAddress(bus: 0, slot: 0x1D), in: &spec)
        }
        if needsPrimaryVideoSlot(spec) {
            let slot = used.contains(PCIAddress(bus: 0, slot: 1).key)
                ? (1...0x1E).first { s in !(0...7).contains { used.contains(PCIAddress(bus: 0, slot: s, function: $0).key) } }
                : 1
            guard let slot else { throw error("no free slot on pcie.0 for the primary video device") }
            let address = PCIAddress(bus: 0, slot: slot)
            used.insert(address.key)
            spec.devices.videos[0].pciAddress = address
        }

        let hadPCIControllers = spec.devices.controllers.contains { $0.kind == .pci && $0.index > 0 }
        let list = consumers(spec)

        // Dry run: which buses must be added, numbered in the order devices need them.
        var freeRootPorts = spec.devices.controllers.filter { c in
            c.kind == .pci && c.model == "pcie-root-port"
                && !used.contains(PCIAddress(bus: c.index, slot: 0).key)
        }.count
        var nextIndex = (spec.devices.controllers.map(\.index).max() ?? 0) + 1
        var addedAny = false
        var bridgeIndex = spec.devices.controllers.first { $0.kind == .pci && $0.model == "pcie-to-pci-bridge" }?.index
        var legacyCount = 0
        func addController(_ model: String) -> Int {
            let index = nextIndex
            nextIndex += 1
            var controller = DomainSpec.Controller(kind: .pci, index: index, model: model)
            controller.implicit = true
            controller.alias = "pci.\(index)"
            if model == "pcie-root-port" { controller.chassis = index }
            spec.devices.controllers.append(controller)
            addedAny = true
            return index
        }
        for consumer in list {
            if consumer.isExpress {
                if freeRootPorts > 0 { freeRootPorts -= 1 } else { _ = addController("pcie-root-port") }
            } else {
                if bridgeIndex == nil {
                    _ = addController("pcie-root-port")  // holds the bridge
                    bridgeIndex = addController("pcie-to-pci-bridge")
                }
                legacyCount += 1
            }
        }
        if legacyCount > 31 { throw error("more than 31 conventional PCI devices on q35 are not supported") }
        if !hadPCIControllers, addedAny { _ = addController("pcie-root-port") }  // spare port for hotplug

        // Final pass. Controllers first, in index order: root ports pack into
        // pcie.0 slot functions; the bridge takes the first empty root port.
        let order = spec.devices.controllers.indices.filter { spec.devices.controllers[$0].kind == .pci }
            .sorted { spec.devices.controllers[$0].index < spec.devices.controllers[$1].index }
        var packSlot: Int?
        var packFunction = 0
        var slotFunctions: [Int: [Int]] = [:]  // slot → controller array indices placed there
        for index in order where spec.devices.controllers[index].model == "pcie-root-port" {
            guard spec.devices.controllers[index].pciAddress == nil else { continue }
            if packSlot == nil || packFunction > 7 {
                packSlot = (1...0x1E).first { s in !(0...7).contains { used.contains(PCIAddress(bus: 0, slot: s, function: $0).key) } }
                packFunction = 0
            }
            guard let slot = packSlot else { throw error("pcie.0 has no free slot for more root ports") }
            let address = PCIAddress(bus: 0, slot: slot, function: packFunction)
            used.insert(address.key)
            spec.devices.controllers[index].pciAddress = address
            slotFunctions[slot, default: []].append(index)
            packFunction += 1
        }
        for (_, members) in slotFunctions where members.count > 1 {
            if let first = members.first { spec.devices.controllers[first].pciAddress?.multifunction = true }
        }
        // A virtio IOMMU is integrated on pcie.0: the first slot free once the root ports are packed.
        if spec.devices.iommu?.model == .virtio, spec.devices.iommu?.pciAddress == nil {
            guard let slot = (1...0x1E).first(where: { s in !(0...7).contains { used.contains(PCIAddress(bus: 0, slot: s, function: $0).key) } })
            else { throw error("pcie.0 has no free slot for the virtio IOMMU") }
            let address = PCIAddress(bus: 0, slot: slot)
            used.insert(address.key)
            spec.devices.iommu?.pciAddress = address
        }
        for index in order {
            let controller = spec.devices.controllers[index]
            if controller.model == "pcie-root-port" {
                if spec.devices.controllers[index].port == nil, let a = controller.pciAddress, a.bus == 0 {
                    spec.devices.controllers[index].port = a.slot << 3 | a.function
                }
                if spec.devices.controllers[index].chassis == nil {
                    spec.devices.controllers[index].chassis = controller.index
                }
            }
        }
        func rootPortsInOrder() -> [Int] {
            order.filter { spec.devices.controllers[$0].model == "pcie-root-port" }.map { spec.devices.controllers[$0].index }
        }
        func takeRootPort(_ name: String) throws -> PCIAddress {
            guard let bus = rootPortsInOrder().first(where: { !used.contains(PCIAddress(bus: $0, slot: 0).key) }) else {
                throw error("no free pcie-root-port for \(name)")
            }
            let address = PCIAddress(bus: bus, slot: 0)
            used.insert(address.key)
            return address
        }
        if let bridgeIndex,
            let arrayIndex = spec.devices.controllers.firstIndex(where: { $0.kind == .pci && $0.index == bridgeIndex }),
            spec.devices.controllers[arrayIndex].pciAddress == nil
        {
            spec.devices.controllers[arrayIndex].pciAddress = try takeRootPort("the pcie-to-pci-bridge")
        }
        for consumer in list {
            if consumer.isExpress {
                set(consumer.device, try takeRootPort(consumer.name), in: &spec)
            } else {
                guard let bridgeIndex,
                    let slot = (1...31).first(where: { !used.contains(PCIAddress(bus: bridgeIndex, slot: $0).key) })
                else { throw error("no free slot on a pcie-to-pci-bridge for \(consumer.name)") }
                let address = PCIAddress(bus: bridgeIndex, slot: slot)
                used.insert(address.key)
                set(consumer.device, address, in: &spec)
            }
        }
    }
}

extension PCIAddress {
    struct Key: Hashable {
        var bus: Int
        var slot: Int
        var function: Int
    }
    var key: Key { Key(bus: bus, slot: slot, function: function) }
}
