/// Renders the live definition: the user's XML with what vmshim filled in,
/// the way `virsh dumpxml` of a running domain shows it (UUID, MACs, aliases,
/// PCI and drive addresses, implicit controllers and devices, pty paths, VNC
/// port, tap names). A restarted shim re-reads it, so it parses back to the
/// same hardware.
public struct LiveXML {
    /// Facts only known once QEMU runs.
    public struct Runtime: Sendable, Equatable {
        /// Character device alias → host path (pty paths, sockets).
        public var charDevicePaths: [String: String] = [:]
        /// NIC alias → tap device name.
        public var tapNames: [String: String] = [:]
        /// The machine type QEMU resolved an alias ("pc") to.
        public var canonicalMachine: String?

        public init(charDevicePaths: [String: String] = [:], tapNames: [String: String] = [:], canonicalMachine: String? = nil) {
            self.charDevicePaths = charDevicePaths
            self.tapNames = tapNames
            self.canonicalMachine = canonicalMachine
        }
    }

    public static func render(source: String, file: String, spec: DomainSpec, runtime: Runtime) throws -> String {
        let root = try XMLTree.parse(source, file: file)
        let updater = LiveXML(root: root, spec: spec, runtime: runtime)
        updater.apply()
        return root.xmlString()
    }

    let root: XMLElement
    let spec: DomainSpec
    let runtime: Runtime

    func apply() {
        // A generated UUID goes right after <name>, where libvirt puts it.
        let uuid = root.firstElement(named: "uuid")
            ?? root.insertChild(XMLElement(name: "uuid"), before: ["title", "description", "metadata", "maxMemory", "memory"])
        uuid.text = spec.uuid.description
        let memory = root.child(named: "memory")
        memory.text = String(spec.memory.totalKiB)
        memory.setAttribute("unit", "KiB")
        let current = root.firstElement(named: "currentMemory")
            ?? root.insertChild(XMLElement(name: "currentMemory"), before: ["vcpu", "os"])
        current.text = String(spec.memory.currentKiB)
        current.setAttribute("unit", "KiB")
        if let machine = runtime.canonicalMachine, let type = root.firstElement(named: "os")?.firstElement(named: "type") {
            type.setAttribute("machine", machine)
        }
        if let firmware = spec.os.firmware, let os = root.firstElement(named: "os") {
            // What libvirt shows for a running domain: the chosen loader and store.
            let loader = os.firstElement(named: "loader")
                ?? os.insertChild(XMLElement(name: "loader"), before: ["nvram", "boot", "bootmenu", "smbios", "kernel", "initrd", "cmdline"])
            loader.setAttribute("readonly", "yes")
            if let secure = firmware.secure { loader.setAttribute("secure", secure ? "yes" : "no") }
            loader.setAttribute("type", "pflash")
            loader.text = firmware.loader ?? ""
            let nvram = os.firstElement(named: "nvram")
                ?? os.insertChild(XMLElement(name: "nvram"), before: ["boot", "bootmenu", "smbios", "kernel", "initrd", "cmdline"])
            if let template = firmware.nvramTemplate { nvram.setAttribute("template", template) }
            nvram.text = firmware.nvram ?? ""
            if spec.features.smm == true, let features = root.firstElement(named: "features"), features.firstElement(named: "smm") == nil {
                features.appendChild(XMLElement(name: "smm", attributes: [("state", "on")]))
            }
        }
        updateHostModelCPU()
        let devices = root.child(named: "devices")
        // libvirt fills in the capabilities' default emulator when none is named.
        let emulator = devices.firstElement(named: "emulator")
            ?? devices.insertChild(XMLElement(name: "emulator"), before: devices.children.map(\.name))
        emulator.text = spec.emulator
        updateDisks(devices)
        updateControllers(devices)
        updateInterfaces(devices)
        updateCharDevices(devices)
        updateInputsGraphicsVideo(devices)
        updateBalloonRNGPanic(devices)
    }

    /// A host-model CPU as libvirt shows a running domain's: the custom
    /// model it was expanded to, so a restore or a restarted shim keeps the
    /// same CPU even if QEMU changes underneath.
    private func updateHostModelCPU() {
        guard let cpu = root.firstElement(named: "cpu"), cpu.attribute("mode") == "host-model",
            spec.cpu.mode == .custom, let model = spec.cpu.model
        else { return }
        cpu.setAttribute("mode", "custom")
        cpu.setAttribute("match", "exact")
        cpu.setAttribute("check", "full")
        for name in ["model", "vendor", "feature"] {
            for child in cpu.elements(named: name) { cpu.removeChild(child) }
        }
        let after = ["topology", "cache", "maxphysaddr", "numa"]
        _ = cpu.insertChild(XMLElement(name: "model", attributes: [("fallback", "forbid")], text: model), before: ["vendor"] + after)
        if let vendor = spec.cpu.vendor {
            _ = cpu.insertChild(XMLElement(name: "vendor", text: vendor), before: after)
        }
        for feature in spec.cpu.features {
            _ = cpu.insertChild(
                XMLElement(name: "feature", attributes: [("policy", feature.policy.rawValue), ("name", feature.name)]),
                before: ["numa"])
        }
    }

    private func element(_ devices: XMLElement, _ name: String, _ index: Int?) -> XMLElement? {
        guard let index else { return nil }
        let matches = devices.elements(named: name)
        return index < matches.count ? matches[index] : nil
    }

    private func setAlias(_ element: XMLElement, _ alias: String) {
        guard !alias.isEmpty else { return }
        element.child(named: "alias").setAttribute("name", alias)
    }

    private func setPCIAddress(_ element: XMLElement, _ address: PCIAddress?) {
        guard let address else { return }
        let node = element.child(named: "address")
        for name in ["type", "domain", "bus", "slot", "function", "multifunction", "controller", "unit", "target"] {
            node.removeAttribute(name)
        }
        func hex(_ value: Int, _ width: Int) -> String {
            let digits = String(value, radix: 16)
            return "0x" + String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        node.setAttribute("type", "pci")
        node.setAttribute("domain", hex(address.domain, 4))
        node.setAttribute("bus", hex(address.bus, 2))
        node.setAttribute("slot", hex(address.slot, 2))
        node.setAttribute("function", hex(address.function, 1))
        if address.multifunction { node.setAttribute("multifunction", "on") }
    }

    private func updateDisks(_ devices: XMLElement) {
        let nodes = devices.elements(named: "disk")
        // A disk startupPolicy='optional' dropped is not part of the running guest.
        let kept = Set(spec.devices.disks.compactMap(\.xmlIndex))
        for (index, node) in nodes.enumerated() where !kept.contains(index) { devices.removeChild(node) }
        for disk in spec.devices.disks {
            guard let index = disk.xmlIndex, index < nodes.count else { continue }
            let node = nodes[index]
            setAlias(node, disk.alias)
            if disk.source == nil {
                // An optional cdrom whose medium was missing: an empty tray, no chain.
                for name in ["source", "backingStore"] {
                    if let child = node.firstElement(named: name) { node.removeChild(child) }
                }
            }
            updateBackingStore(node, disk)
            if let address = disk.driveAddress {
                let a = node.child(named: "address")
                for name in a.attributes.map(\.name) { a.removeAttribute(name) }
                a.setAttribute("type", "drive")
                a.setAttribute("controller", String(address.controller))
                a.setAttribute("bus", String(address.bus))
                a.setAttribute("target", String(address.target))
                a.setAttribute("unit", String(address.unit))
            } else {
                setPCIAddress(node, disk.pciAddress)
            }
            if disk.device == .cdrom, node.firstElement(named: "readonly") == nil {
                node.insertChild(XMLElement(name: "readonly"), before: ["alias", "address"])
            }
        }
    }

    /// The checked chain, nested top-down as libvirt shows it, ending with
    /// an empty `<backingStore/>`; left as written while it is unknown.
    private func updateBackingStore(_ node: XMLElement, _ disk: DomainSpec.Disk) {
        guard disk.backingChainComplete, disk.source != nil else { return }
        if let old = node.firstElement(named: "backingStore") { node.removeChild(old) }
        var parent = node.insertChild(XMLElement(name: "backingStore"), before: ["target", "readonly", "shareable", "serial", "boot", "alias", "address"])
        for layer in disk.backingChain {
            parent.setAttribute("type", layer.sourceType.rawValue)
            _ = parent.appendChild(XMLElement(name: "format", attributes: [("type", layer.format.rawValue)]))
            _ = parent.appendChild(XMLElement(name: "source", attributes: [(layer.sourceType == .file ? "file" : "dev", layer.path)]))
            parent = parent.appendChild(XMLElement(name: "backingStore"))
        }
    }

    private func updateControllers(_ devices: XMLElement) {
        for controller in spec.devices.controllers {
            let node: XMLElement
            if let existing = element(devices, "controller", controller.xmlIndex) {
                node = existing
                // The model libvirt fills in (lsilogic for a SCSI controller without one).
                if let model = controller.model, existing.attribute("model") == nil { existing.setAttribute("model", model) }
            } else {
                var attributes = [("type", controller.kind.rawValue), ("index", String(controller.index))]
                if let model = controller.model { attributes.append(("model", model)) }
                node = devices.appendChild(XMLElement(name: "controller", attributes: attributes))
            }
            if controller.kind == .pci, controller.model == "pcie-root-port" || controller.model == "pci-bridge" {
                let target = node.child(named: "target")
                if let chassis = controller.chassis {
                    target.setAttribute(controller.model == "pci-bridge" ? "chassisNr" : "chassis", String(chassis))
                }
                if let port = controller.port { target.setAttribute("port", "0x" + String(port, radix: 16)) }
            }
            setAlias(node, controller.alias)
            setPCIAddress(node, controller.pciAddress)
        }
    }

    private func updateInterfaces(_ devices: XMLElement) {
        for nic in spec.devices.interfaces {
            guard let node = element(devices, "interface", nic.xmlIndex) else { continue }
            if node.firstElement(named: "mac") == nil {
                node.insertChild(XMLElement(name: "mac", attributes: [("address", nic.mac)]), before: ["source", "target", "model"])
            }
            if nic.kind == .network, let source = node.firstElement(named: "source") {
                // As libvirt shows it: the port it holds and the bridge that port joined.
                if let port = nic.networkPortID { source.setAttribute("portid", port) }
                if let bridge = nic.bridge { source.setAttribute("bridge", bridge) }
            }
            if let tap = runtime.tapNames[nic.alias] {
                node.child(named: "target").setAttribute("dev", tap)
            }
            if node.firstElement(named: "model") == nil {
                node.appendChild(XMLElement(name: "model", attributes: [("type", nic.model.rawValue)]))
            }
            setAlias(node, nic.alias)
            setPCIAddress(node, nic.pciAddress)
        }
    }

    private func updateCharDevices(_ devices: XMLElement) {
        func update(_ node: XMLElement, _ device: DomainSpec.CharDevice) {
            if case .pty = device.backend, let path = runtime.charDevicePaths[device.alias] {
                node.setAttribute("type", "pty")
                node.child(named: "source").setAttribute("path", path)
            }
            if case .unixListen(let path) = device.backend {
                let source = node.child(named: "source")
                source.setAttribute("mode", "bind")
                source.setAttribute("path", path)
            }
            setAlias(node, device.alias)
        }
        for serial in spec.devices.serials {
            if let node = element(devices, "serial", serial.xmlIndex) {
                update(node, serial)
                let target = node.child(named: "target")
                target.setAttribute("type", "isa-serial")
                target.setAttribute("port", String(serial.targetPort ?? 0))
            } else {
                // The serial port a console implied, written out as libvirt does.
                let node = XMLElement(name: "serial")
                switch serial.backend {
                case .pty:
                    node.setAttribute("type", "pty")
                case .null:
                    node.setAttribute("type", "null")
                case .file(let path, let append):
                    node.setAttribute("type", "file")
                    let source = node.appendChild(XMLElement(name: "source", attributes: [("path", path)]))
                    if let append { source.setAttribute("append", append ? "on" : "off") }
                case .unixListen(let path):
                    node.setAttribute("type", "unix")
                    node.appendChild(XMLElement(name: "source", attributes: [("mode", "bind"), ("path", path)]))
                case .unixConnect(let path, _):
                    node.setAttribute("type", "unix")
                    node.appendChild(XMLElement(name: "source", attributes: [("mode", "connect"), ("path", path)]))
                case .tcp(let host, let port, let listen, let telnet, _):
                    node.setAttribute("type", "tcp")
                    node.appendChild(XMLElement(
                        name: "source", attributes: [("mode", listen ? "bind" : "connect"), ("host", host), ("service", String(port))]))
                    node.appendChild(XMLElement(name: "protocol", attributes: [("type", telnet ? "telnet" : "raw")]))
                case .udp(let host, let port, let localHost, let localPort):
                    node.setAttribute("type", "udp")
                    if let localHost, let localPort {
                        node.appendChild(XMLElement(
                            name: "source", attributes: [("mode", "bind"), ("host", localHost), ("service", String(localPort))]))
                    }
                    node.appendChild(XMLElement(
                        name: "source", attributes: [("mode", "connect"), ("host", host), ("service", String(port))]))
                case .spicevmc:
                    node.setAttribute("type", "spicevmc")  // channels only; never a serial
                }
                node.appendChild(XMLElement(name: "target", attributes: [("type", "isa-serial"), ("port", String(serial.targetPort ?? 0))]))
                devices.insertChild(node, before: ["console", "channel", "input", "graphics", "video", "memballoon", "rng", "panic"])
                update(node, serial)
            }
        }
        for parallel in spec.devices.parallels {
            guard let node = element(devices, "parallel", parallel.xmlIndex) else { continue }
            update(node, parallel)
            node.child(named: "target").setAttribute("port", String(parallel.targetPort ?? 0))
        }
        for console in spec.devices.consoles {
            guard let node = element(devices, "console", console.xmlIndex) else { continue }
            update(node, console)
            let target = node.child(named: "target")
            target.setAttribute("type", "serial")
            target.setAttribute("port", String(console.targetPort ?? 0))
        }
        for channel in spec.devices.channels {
            guard let node = element(devices, "channel", channel.xmlIndex) else { continue }
            update(node, channel)
            let address = node.child(named: "address")
            address.setAttribute("type", "virtio-serial")
            address.setAttribute("controller", "0")
            address.setAttribute("bus", "0")
            address.setAttribute("port", String(channel.targetPort ?? 1))
        }
    }

    private func updateInputsGraphicsVideo(_ devices: XMLElement) {
        for input in spec.devices.inputs {
            let node = element(devices, "input", input.xmlIndex)
                ?? devices.appendChild(XMLElement(name: "input", attributes: [("type", input.kind.rawValue), ("bus", input.bus.rawValue)]))
            setAlias(node, input.alias)
            setPCIAddress(node, input.pciAddress)
        }
        for redirdev in spec.devices.redirdevs {
            guard let node = element(devices, "redirdev", redirdev.xmlIndex) else { continue }
            setAlias(node, redirdev.alias)
        }
        for hub in spec.devices.hubs {
            // The hubs libvirt adds are written out with their port, as libvirt's define does.
            let node = element(devices, "hub", hub.xmlIndex) ?? devices.appendChild(XMLElement(name: "hub", attributes: [("type", "usb")]))
            setAlias(node, hub.alias)
            if let port = hub.usbPort, node.firstElement(named: "address") == nil {
                node.appendChild(XMLElement(name: "address", attributes: [("type", "usb"), ("bus", "0"), ("port", port)]))
            }
        }
        for graphics in spec.devices.graphics {
            guard let node = element(devices, "graphics", graphics.xmlIndex) else { continue }
            if let port = graphics.port {
                node.setAttribute("port", String(port))
                node.setAttribute("autoport", graphics.autoport ? "yes" : "no")
            }
            if case .address(let address) = graphics.listen { node.setAttribute("listen", address) }
        }
        for video in spec.devices.videos {
            let node: XMLElement
            if let existing = element(devices, "video", video.xmlIndex) {
                node = existing
            } else {
                node = devices.appendChild(XMLElement(name: "video"))
                var attributes = [("type", video.model.rawValue)]
                if let vram = video.vramKiB { attributes.append(("vram", String(vram))) }
                if let heads = video.heads { attributes.append(("heads", String(heads))) }
                attributes.append(("primary", "yes"))
                node.appendChild(XMLElement(name: "model", attributes: attributes))
            }
            setAlias(node, video.alias)
            setPCIAddress(node, video.pciAddress)
        }
    }

    private func updateBalloonRNGPanic(_ devices: XMLElement) {
        if let balloon = spec.devices.memballoon {
            let node = element(devices, "memballoon", balloon.xmlIndex)
                ?? devices.appendChild(XMLElement(name: "memballoon", attributes: [("model", balloon.model.rawValue)]))
            setAlias(node, balloon.alias)
            setPCIAddress(node, balloon.pciAddress)
        }
        for rng in spec.devices.rngs {
            guard let node = element(devices, "rng", rng.xmlIndex) else { continue }
            setAlias(node, rng.alias)
            setPCIAddress(node, rng.pciAddress)
        }
        if let iommu = spec.devices.iommu, let node = element(devices, "iommu", iommu.xmlIndex) {
            setAlias(node, iommu.alias)
        }
        for sound in spec.devices.sounds {
            guard let node = element(devices, "sound", sound.xmlIndex) else { continue }
            setAlias(node, sound.alias)
            setPCIAddress(node, sound.pciAddress)
        }
        if let watchdog = spec.devices.watchdog, let node = element(devices, "watchdog", watchdog.xmlIndex) {
            setAlias(node, watchdog.alias)
            setPCIAddress(node, watchdog.pciAddress)
        }
    }
}
