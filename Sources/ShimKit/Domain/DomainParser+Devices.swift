extension DomainParser {
    func parseDevices(_ element: XMLElement, os: DomainSpec.OS) throws -> DomainSpec.Devices {
        var devices = DomainSpec.Devices()
        var positions: [String: Int] = [:]
        for child in element.children where child.namespaceURI == nil {
            let position = positions[child.name, default: 0]
            positions[child.name] = position + 1
            switch child.name {
            case "emulator":
                continue
            case "disk":
                child.consumed = true
                devices.disks.append(try parseDisk(child).at(position, line: child.line))
            case "controller":
                child.consumed = true
                if child.attribute("index") == nil, let type = child.attribute("type") {
                    // libvirt gives a controller without one the lowest index
                    // its type does not use yet, in document order.
                    var used = Set(devices.controllers.filter { $0.kind.rawValue == type }.map(\.index))
                    for other in element.children where other.name == "controller" && other.attribute("type") == type {
                        if let index = other.attribute("index").flatMap({ Int($0) }) { used.insert(index) }
                    }
                    var index = 0
                    while used.contains(index) { index += 1 }
                    child.setAttribute("index", String(index))
                }
                devices.controllers.append(try parseController(child).at(position, line: child.line))
            case "interface":
                child.consumed = true
                devices.interfaces.append(try parseInterface(child).at(position, line: child.line))
            case "serial":
                child.consumed = true
                devices.serials.append(try parseCharDevice(child, kind: .serial).at(position, line: child.line))
            case "parallel":
                child.consumed = true
                devices.parallels.append(try parseCharDevice(child, kind: .parallel).at(position, line: child.line))
            case "console":
                child.consumed = true
                devices.consoles.append(try parseCharDevice(child, kind: .console).at(position, line: child.line))
            case "channel":
                child.consumed = true
                devices.channels.append(try parseCharDevice(child, kind: .channel).at(position, line: child.line))
            case "input":
                child.consumed = true
                devices.inputs.append(try parseInput(child).at(position, line: child.line))
            case "graphics":
                child.consumed = true
                devices.graphics.append(try parseGraphics(child).at(position, line: child.line))
            case "video":
                child.consumed = true
                devices.videos.append(try parseVideo(child).at(position, line: child.line))
            case "memballoon":
                child.consumed = true
                guard devices.memballoon == nil else { throw reader.error(child, "only one <memballoon> is allowed") }
                devices.memballoon = try parseMemballoon(child).at(position, line: child.line)
            case "rng":
                child.consumed = true
                devices.rngs.append(try parseRNG(child).at(position, line: child.line))
            case "iommu":
                child.consumed = true
                guard devices.iommu == nil else { throw reader.error(child, "only one <iommu> is allowed") }
                devices.iommu = try parseIOMMU(child).at(position, line: child.line)
            case "sound":
                child.consumed = true
                devices.sounds.append(try parseSound(child).at(position, line: child.line))
            case "watchdog":
                child.consumed = true
                guard devices.watchdog == nil else {
                    throw reader.unsupported(child, "a second <watchdog> (libvirt 9.0 supports a single watchdog)")
                }
                devices.watchdog = try parseWatchdog(child).at(position, line: child.line)
            case "panic":
                child.consumed = true
                devices.panics.append(try parsePanic(child).at(position, line: child.line))
            case "memory":
                child.consumed = true
                devices.memoryDevices.append(try parseMemoryDevice(child).at(position, line: child.line))
            case "audio":
                child.consumed = true
                let type = reader.attribute(child, "type") ?? ""
                guard let audio = DomainSpec.Devices.Audio(rawValue: type) else {
                    throw reader.unsupported(child, "audio type='\(type)' (none and spice are supported)")
                }
                guard devices.audio == nil else { throw reader.unsupported(child, "a second <audio> backend") }
                if let id = try reader.intAttribute(child, "id"), id != 1 {
                    throw reader.unsupported(child, "audio id='\(id)' (one backend, id 1)")
                }
                devices.audio = audio
                devices.audioLine = child.line
            case "redirdev":
                child.consumed = true
                devices.redirdevs.append(try parseRedirdev(child).at(position, line: child.line))
            case "hub":
                child.consumed = true
                devices.hubs.append(try parseHub(child).at(position, line: child.line))
            default:
                continue  // left unconsumed: reported with its line by the final check
            }
        }
        try checkUniqueTargets(devices, element)
        return devices
    }

    func checkUniqueTargets(_ devices: DomainSpec.Devices, _ element: XMLElement) throws {
        var seen = Set<String>()
        for disk in devices.disks where !seen.insert(disk.targetDev).inserted {
            throw reader.error(element, "two disks use target dev='\(disk.targetDev)'")
        }
        var macs = Set<String>()
        for nic in devices.interfaces where !nic.macGenerated && !macs.insert(nic.mac.lowercased()).inserted {
            throw reader.error(element, "two interfaces use MAC address \(nic.mac)")
        }
    }

    // MARK: - Addresses and aliases

    enum Address {
        case pci(PCIAddress)
        case drive(DriveAddress)
        /// A USB port like `1` or `1.2` (checked), nil when the address names none.
        case usb(port: String?)
        case isa(ioBase: Int?)
        case virtioSerial(controller: Int, bus: Int, port: Int?)
    }

    func parseAddress(_ device: XMLElement) throws -> Address? {
        guard let element = try reader.child(device, "address") else { return nil }
        let type = try reader.requiredAttribute(element, "type")
        switch type {
        case "pci":
            let domain = try reader.intAttribute(element, "domain", range: 0...0xFFFF) ?? 0
            guard domain == 0 else { throw reader.unsupported(element, "PCI domain \(domain) (only 0)") }
            var address = PCIAddress(
                bus: try reader.intAttribute(element, "bus", range: 0...0xFF) ?? 0,
                slot: try reader.intAttribute(element, "slot", range: 0...0x1F) ?? 0,
                function: try reader.intAttribute(element, "function", range: 0...7) ?? 0)
            address.multifunction = try reader.boolAttribute(element, "multifunction") ?? false
            return .pci(address)
        case "drive":
            return .drive(
                DriveAddress(
                    controller: try reader.intAttribute(element, "controller", range: 0...31) ?? 0,
                    bus: try reader.intAttribute(element, "bus", range: 0...31) ?? 0,
                    target: try reader.intAttribute(element, "target", range: 0...0) ?? 0,
                    unit: try reader.intAttribute(element, "unit", range: 0...16383) ?? 0))
        case "usb":
            _ = try reader.intAttribute(element, "bus", range: 0...0)
            guard let port = reader.attribute(element, "port"), !port.isEmpty else { return .usb(port: nil) }
            guard port.split(separator: ".", omittingEmptySubsequences: false).allSatisfy({ Int($0).map { (1...31).contains($0) } ?? false }) else {
                throw reader.error(element, "USB port '\(port)' must be like 1 or 1.2")
            }
            return .usb(port: port)
        case "isa":
            return .isa(ioBase: try reader.intAttribute(element, "iobase", range: 0...0xFFFF))
        case "virtio-serial":
            return .virtioSerial(
                controller: try reader.intAttribute(element, "controller", range: 0...31) ?? 0,
                bus: try reader.intAttribute(element, "bus", range: 0...0) ?? 0,
                port: try reader.intAttribute(element, "port", range: 1...31))
        default:
            throw reader.unsupported(element, "address type='\(type)'")
        }
    }

    func pciAddress(_ device: XMLElement) throws -> PCIAddress? {
        guard let address = try parseAddress(device) else { return nil }
        guard case .pci(let pci) = address else {
            throw reader.error(device.firstElement(named: "address") ?? device, "this device needs a PCI address")
        }
        return pci
    }

    /// User aliases (`ua-` prefix) are kept; libvirt's generated aliases are
    /// output only and recomputed.
    func userAlias(_ device: XMLElement) throws -> String {
        guard let element = try reader.child(device, "alias") else { return "" }
        let name = try reader.requiredAttribute(element, "name")
        return name.hasPrefix("ua-") ? name : ""
    }

    func bootOrder(_ device: XMLElement) throws -> Int? {
        guard let boot = try reader.child(device, "boot") else { return nil }
        reader.ignoreAttributes(boot, "loadparm")
        guard let order = try reader.intAttribute(boot, "order", range: 1...65535) else {
            throw reader.error(boot, "missing attribute 'order'")
        }
        return order
    }

    // MARK: - Disks

    func parseDisk(_ element: XMLElement) throws -> DomainSpec.Disk {
        let sourceTypeRaw = reader.attribute(element, "type") ?? "file"
        guard let sourceType = DomainSpec.Disk.SourceType(rawValue: sourceTypeRaw) else {
            throw reader.unsupported(element, "disk type='\(sourceTypeRaw)' (vmshim supports file and block)")
        }
        let deviceRaw = reader.attribute(element, "device") ?? "disk"
        guard let device = DomainSpec.Disk.Device(rawValue: deviceRaw) else {
            throw reader.unsupported(element, "disk device='\(deviceRaw)' (vmshim supports disk, cdrom and floppy)")
        }
        if reader.attribute(element, "snapshot") != nil { throw reader.unsupported(element, "disk snapshot") }
        let diskModel = reader.attribute(element, "model")
        switch diskModel {
        case nil, "virtio", "virtio-non-transitional": break
        case "virtio-transitional"?:
            throw reader.unsupported(element, "disk model='virtio-transitional' (its conventional-PCI placement on q35 is not done yet)")
        case let other?:
            throw reader.error(element, "unknown disk model '\(other)' (virtio, virtio-transitional, virtio-non-transitional)")
        }
        if element.attribute("rawio") != nil { throw reader.unsupported(element, "rawio") }

        var format = DomainSpec.Disk.Format.raw
        var cache: DomainSpec.Disk.Cache?
        var io: DomainSpec.Disk.IO?
        var discard: DomainSpec.Disk.Discard?
        var iothread: Int?
        var queues: Int?
        var virtqueueNotification: (ioeventfd: Bool?, eventIdx: Bool?) = (nil, nil)
        var errorPolicy: String?
        var readErrorPolicy: String?
        if let driver = try reader.child(element, "driver") {
            if let name = reader.attribute(driver, "name"), name != "qemu" {
                throw reader.error(driver, "driver name='\(name)' must be 'qemu'")
            }
            if let type = reader.attribute(driver, "type") {
                guard let value = DomainSpec.Disk.Format(rawValue: type) else {
                    throw reader.unsupported(driver, "disk format type='\(type)' (vmshim supports raw and qcow2)")
                }
                format = value
            }
            cache = try reader.enumAttribute(driver, "cache", DomainSpec.Disk.Cache.self)
            io = try reader.enumAttribute(driver, "io", DomainSpec.Disk.IO.self)
            discard = try reader.enumAttribute(driver, "discard", DomainSpec.Disk.Discard.self)
            for (attribute, allowed) in [("error_policy", ["stop", "report", "ignore", "enospace"]), ("rerror_policy", ["stop", "report", "ignore"])] {
                guard let value = reader.attribute(driver, attribute) else { continue }
                guard allowed.contains(value) else {
                    throw reader.error(driver, "\(attribute)='\(value)' must be one of \(allowed.joined(separator: ", "))")
                }
                if attribute == "error_policy" { errorPolicy = value } else { readErrorPolicy = value }
            }
            iothread = try reader.intAttribute(driver, "iothread", range: 1...Int(Int32.max))
            queues = try reader.intAttribute(driver, "queues", range: 1...1024)
            virtqueueNotification = (try reader.boolAttribute(driver, "ioeventfd"), try reader.boolAttribute(driver, "event_idx"))
            if let mapping = try reader.child(driver, "iothreads") {
                // Newer than libvirt 9.0, which drops it without a word.
                throw reader.unsupported(mapping, "per-queue iothread mapping (QEMU's iothread-vq-mapping)")
            }
            if io == .native, let cache, cache != .none, cache != .directsync {
                throw reader.error(driver, "io='native' needs cache='none' or 'directsync' (libvirt refuses it too)")
            }
        }

        var source: String?
        var startupPolicy: DomainSpec.Disk.StartupPolicy?
        if let sourceElement = try reader.child(element, "source") {
            let attributeName = sourceType == .file ? "file" : "dev"
            if let path = reader.attribute(sourceElement, attributeName), !path.isEmpty {
                guard path.hasPrefix("/") else {
                    throw reader.error(sourceElement, "\(attributeName)='\(path)' must be an absolute path")
                }
                source = path
            }
            startupPolicy = try reader.enumAttribute(sourceElement, "startupPolicy", DomainSpec.Disk.StartupPolicy.self)
            if startupPolicy == .requisite, device == .disk {
                // libvirt's wording (domain_validate.c).
                throw reader.error(sourceElement, "disk startupPolicy 'requisite' is allowed only for cdrom or floppy")
            }
            reader.ignoreAttributes(sourceElement, "index")
            if let seclabel = try reader.child(sourceElement, "seclabel") {
                throw reader.unsupported(seclabel, "per-disk security labels")
            }
        }
        var (backingChain, backingChainComplete) = try parseBackingStore(element)
        if format == .raw {
            // A raw image has no backing file; a declared chain under it is a mistake.
            if let first = backingChain.first {
                throw reader.error(element, "a raw disk has no backing file, but <backingStore> declares \(first.path)")
            }
            backingChainComplete = true
        }
        guard let target = try reader.child(element, "target") else { throw reader.error(element, "missing <target>") }
        let targetDev = try reader.requiredAttribute(target, "dev")
        let busRaw = reader.attribute(target, "bus") ?? DomainParser.defaultBus(forTarget: targetDev)
        guard let busName = busRaw, let bus = DomainSpec.Disk.Bus(rawValue: busName) else {
            throw reader.unsupported(target, "disk bus='\(busRaw ?? "?")' (vmshim supports virtio, scsi, sata, ide, usb and fdc)")
        }
        // libvirt: floppies live on the floppy controller, and only they do.
        if (device == .floppy) != (bus == .fdc) {
            throw reader.error(target, device == .floppy ? "a floppy needs bus='fdc'" : "bus='fdc' is for device='floppy'")
        }
        if device == .floppy {
            guard let index = DomainParser.diskIndex(targetDev), targetDev.hasPrefix("fd"), index < 2 else {
                throw reader.error(target, "dev='\(targetDev)' must be fda or fdb (the floppy controller has two drives)")
            }
        }
        if let tray = reader.attribute(target, "tray"), tray != "closed" {
            throw reader.unsupported(target, "tray='\(tray)'")
        }
        let removable = try reader.boolAttribute(target, "removable")
        if removable != nil, bus != .usb, bus != .scsi {
            throw reader.error(target, "removable applies to USB and SCSI disks only")
        }
        if bus == .usb, device == .cdrom {
            throw reader.unsupported(target, "a USB cdrom (vmshim supports USB disks)")
        }
        guard DomainParser.diskIndex(targetDev) != nil else {
            throw reader.error(target, "dev='\(targetDev)' is not a disk name like vda, sda or hda")
        }
        if device == .cdrom, bus == .virtio {
            throw reader.error(target, "a cdrom cannot sit on the virtio bus; use scsi, sata or ide")
        }
        if device == .disk, source == nil {
            throw reader.error(element, "a disk needs a <source \(sourceType == .file ? "file" : "dev")=…>")
        }
        let readOnly = try reader.child(element, "readonly") != nil || device == .cdrom
        let shareable = try reader.child(element, "shareable") != nil
        let serial = try reader.childText(element, "serial")
        if let serial, serial.unicodeScalars.contains(where: { !DomainParser.isSerialCharacter($0) }) {
            throw reader.error(element, "disk serial '\(serial)' may only hold letters, digits, spaces and _ + - . : /")
        }
        var ioTune: [String: Int64] = [:]
        var ioTuneGroup: String?
        if let iotune = try reader.child(element, "iotune") {
            (ioTune, ioTuneGroup) = try parseIOTune(iotune)
        }
        let identity = try parseDiskIdentity(element, bus: bus)
        var geometry: DomainSpec.Disk.Geometry?
        if let geometryElement = try reader.child(element, "geometry") {
            guard device == .disk, bus != .usb else {
                throw reader.error(geometryElement, "only virtio, ide, sata and scsi disks (not cdroms) take a <geometry>")
            }
            var parsed = DomainSpec.Disk.Geometry(
                cylinders: try reader.intAttribute(geometryElement, "cyls", range: 1...65535) ?? 0,
                heads: try reader.intAttribute(geometryElement, "heads", range: 1...255) ?? 0,
                sectors: try reader.intAttribute(geometryElement, "secs", range: 1...255) ?? 0)
            guard parsed.cylinders > 0, parsed.heads > 0, parsed.sectors > 0 else {
                throw reader.error(geometryElement, "<geometry> needs cyls, heads and secs")
            }
            if let trans = reader.attribute(geometryElement, "trans"), trans != "default" {
                guard ["none", "lba", "auto"].contains(trans) else {
                    throw reader.error(geometryElement, "trans='\(trans)' must be none, lba or auto")
                }
                guard bus == .ide else {
                    throw reader.error(geometryElement, "CHS translation (trans) is only for ide disks (libvirt refuses it too)")
                }
                parsed.translation = trans
            }
            geometry = parsed
        }
        for unsupported in ["encryption", "auth", "mirror"] {
            if let node = try reader.child(element, unsupported) { throw reader.unsupported(node, "disk <\(unsupported)>") }
        }
        var disk = DomainSpec.Disk(
            sourceType: sourceType, device: device, source: source, format: format, cache: cache, io: io,
            discard: discard, readOnly: readOnly, shareable: shareable, serial: serial, targetDev: targetDev, bus: bus,
            bootOrder: try bootOrder(element))
        disk.startupPolicy = startupPolicy
        disk.removable = removable
        if iothread != nil || queues != nil || virtqueueNotification.ioeventfd != nil || virtqueueNotification.eventIdx != nil {
            guard bus == .virtio else { throw reader.error(element, "<driver iothread|queues|ioeventfd|event_idx> apply to virtio disks only") }
        }
        disk.iothread = iothread
        disk.queues = queues
        (disk.ioeventfd, disk.eventIdx) = virtqueueNotification
        disk.ioTune = ioTune
        disk.ioTuneGroup = ioTuneGroup
        (disk.wwn, disk.vendor, disk.product, disk.logicalBlockSize, disk.physicalBlockSize) = identity
        disk.geometry = geometry
        if !ioTune.isEmpty, source == nil { throw reader.error(element, "<iotune> needs a medium: an empty cdrom cannot be throttled") }
        if diskModel != nil, bus != .virtio { throw reader.error(element, "a disk model applies to virtio disks only") }
        disk.nonTransitional = diskModel == "virtio-non-transitional"
        // libvirt: rerror follows error_policy unless given; 'enospace' is werror-only (QEMU's enospc).
        disk.writeErrorPolicy = errorPolicy == "enospace" ? "enospc" : errorPolicy
        disk.readErrorPolicy = readErrorPolicy ?? (errorPolicy == "enospace" ? nil : errorPolicy)
        disk.backingChain = backingChain
        disk.backingChainComplete = backingChainComplete
        disk.alias = try userAlias(element)
        switch try parseAddress(element) {
        case .pci(let address)?:
            guard bus == .virtio else { throw reader.error(element, "only virtio disks take a PCI address") }
            disk.pciAddress = address
        case .drive(let address)?:
            guard bus != .virtio, bus != .usb else {
                throw reader.error(element, "a \(bus.rawValue) disk takes a \(bus == .usb ? "USB" : "PCI") address, not a drive address")
            }
            disk.driveAddress = address
        case .usb(let port)?:
            guard bus == .usb else { throw reader.error(element, "only USB disks take a USB address") }
            disk.usbPort = port
        case nil:
            break
        default:
            throw reader.error(element, "unsupported address type for a disk")
        }
        return disk
    }

    /// libvirt's allowed disk serial characters.
    static func isSerialCharacter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", " ", "_", "+", "-", ".", ":", "/": return true
        default: return false
        }
    }

    static func defaultBus(forTarget dev: String) -> String? {
        if dev.hasPrefix("vd") { return "virtio" }
        if dev.hasPrefix("fd") { return "fdc" }
        if dev.hasPrefix("hd") { return "ide" }
        if dev.hasPrefix("sd") { return "scsi" }  // libvirt's default for sd*
        return nil
    }

    /// `<wwn>`, `<vendor>`, `<product>` and `<blockio>`, with libvirt's rules.
    func parseDiskIdentity(_ element: XMLElement, bus: DomainSpec.Disk.Bus) throws
        -> (wwn: UInt64?, vendor: String?, product: String?, logical: Int?, physical: Int?)
    {
        var wwn: UInt64?
        if let wwnElement = try reader.child(element, "wwn") {
            guard bus == .ide || bus == .scsi else { throw reader.error(wwnElement, "only ide and scsi disks take a <wwn> (libvirt refuses it too)") }
            var text = wwnElement.text.trimmingWhitespace()
            if text.hasPrefix("0x") { text = String(text.dropFirst(2)) }
            guard text.count == 16, let value = UInt64(text, radix: 16) else {
                throw reader.error(wwnElement, "wwn '\(wwnElement.text)' must be 16 hexadecimal digits")
            }
            wwn = value
        }
        var texts: [String: String] = [:]
        for (name, limit) in [("vendor", 8), ("product", 16)] {
            guard let node = try reader.child(element, name) else { continue }
            guard bus == .scsi else { throw reader.error(node, "only scsi disks take a <\(name)> (libvirt refuses it too)") }
            let text = node.text.trimmingWhitespace()
            guard !text.isEmpty, text.count <= limit, text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F }) else {
                throw reader.error(node, "<\(name)> must be 1 to \(limit) printable ASCII characters")
            }
            texts[name] = text
        }
        var logical: Int?
        var physical: Int?
        if let blockio = try reader.child(element, "blockio") {
            for attribute in ["logical_block_size", "physical_block_size"] {
                guard let size = try reader.intAttribute(blockio, attribute, range: 512...32768) else { continue }
                guard size & (size - 1) == 0 else { throw reader.error(blockio, "\(attribute)='\(size)' must be a power of two") }
                if attribute == "logical_block_size" { logical = size } else { physical = size }
            }
            if blockio.attribute("discard_granularity") != nil {
                throw reader.unsupported(blockio, "discard_granularity (newer than libvirt 9.0)")
            }
        }
        return (wwn, texts["vendor"], texts["product"], logical, physical)
    }

    /// libvirt's `<iotune>` element names and QEMU's block_set_io_throttle arguments.
    static let ioTuneArguments: [(element: String, argument: String)] = [
        ("total_bytes_sec", "bps"), ("read_bytes_sec", "bps_rd"), ("write_bytes_sec", "bps_wr"),
        ("total_iops_sec", "iops"), ("read_iops_sec", "iops_rd"), ("write_iops_sec", "iops_wr"),
        ("total_bytes_sec_max", "bps_max"), ("read_bytes_sec_max", "bps_rd_max"), ("write_bytes_sec_max", "bps_wr_max"),
        ("total_iops_sec_max", "iops_max"), ("read_iops_sec_max", "iops_rd_max"), ("write_iops_sec_max", "iops_wr_max"),
        ("total_bytes_sec_max_length", "bps_max_length"), ("read_bytes_sec_max_length", "bps_rd_max_length"),
        ("write_bytes_sec_max_length", "bps_wr_max_length"), ("total_iops_sec_max_length", "iops_max_length"),
        ("read_iops_sec_max_length", "iops_rd_max_length"), ("write_iops_sec_max_length", "iops_wr_max_length"),
        ("size_iops_sec", "iops_size"),
    ]

    /// `<iotune>`, checked as libvirt checks it (virDomainDiskDefIotuneParse and
    /// qemuValidateDomainDeviceDefDiskIOThrottle).
    func parseIOTune(_ element: XMLElement) throws -> ([String: Int64], String?) {
        var limits: [String: Int64] = [:]
        for (name, argument) in Self.ioTuneArguments {
            guard let child = try reader.child(element, name) else { continue }
            let text = child.text.trimmingWhitespace()
            guard let value = Int64(text), value >= 0, value <= 1_000_000_000_000_000 else {
                throw reader.error(child, "<\(name)> '\(text)' must be a number from 0 to 10^15")
            }
            if value > 0 { limits[argument] = value }
        }
        for (total, read, write) in [("bps", "bps_rd", "bps_wr"), ("iops", "iops_rd", "iops_wr"), ("bps_max", "bps_rd_max", "bps_wr_max"), ("iops_max", "iops_rd_max", "iops_wr_max")]
        where limits[total] != nil && (limits[read] != nil || limits[write] != nil) {
            throw reader.error(element, "total and read/write \(total.hasPrefix("bps") ? "bytes" : "iops") limits cannot be set at the same time (libvirt refuses it too)")
        }
        for (argument, value) in limits where argument.hasSuffix("_max") {
            let base = String(argument.dropLast(4))
            if limits[base, default: 0] > value {
                throw reader.error(element, "the burst limit \(argument) must not be below \(base)")
            }
        }
        for (argument, _) in limits where argument.hasSuffix("_max_length") {
            let burst = String(argument.dropLast(7))
            guard limits[burst] != nil else { throw reader.error(element, "\(argument) needs \(burst) (libvirt refuses it too)") }
        }
        if limits["iops_size"] != nil, limits["iops"] == nil, limits["iops_rd"] == nil, limits["iops_wr"] == nil {
            throw reader.error(element, "size_iops_sec needs an iops limit")
        }
        let group = try reader.childText(element, "group_name")
        return (limits, group)
    }

    /// libvirt's virDiskNameToIndex: "vda" → 0, "sdz" → 25, "hdaa" → 26.
    public static func diskIndex(_ dev: String) -> Int? {
        var letters = Substring(dev)
        for prefix in ["fd", "hd", "vd", "sd", "xvd", "ubd"] where letters.hasPrefix(prefix) {
            letters = letters.dropFirst(prefix.count)
            break
        }
        guard !letters.isEmpty, letters.count <= 3, letters.allSatisfy({ $0 >= "a" && $0 <= "z" }),
            letters.count < dev.count
        else { return nil }
        var index = 0
        for ch in letters.unicodeScalars {
            index = index * 26 + Int(ch.value - Unicode.Scalar("a").value) + 1
        }
        return index - 1
    }

    // MARK: - Controllers

    func parseController(_ element: XMLElement) throws -> DomainSpec.Controller {
        let typeRaw = try reader.requiredAttribute(element, "type")
        guard let kind = DomainSpec.Controller.Kind(rawValue: typeRaw) else {
            throw reader.unsupported(element, "controller type='\(typeRaw)'")
        }
        let index = try reader.intAttribute(element, "index", range: 0...255) ?? 0
        var controller = DomainSpec.Controller(kind: kind, index: index, model: reader.attribute(element, "model"))
        switch kind {
        case .pci:
            let allowed = ["pci-root", "pcie-root", "pcie-root-port", "pci-bridge", "pcie-to-pci-bridge"]
            guard let model = controller.model else { throw reader.error(element, "a PCI controller needs a model") }
            guard allowed.contains(model) else {
                throw reader.unsupported(element, "PCI controller model '\(model)' (supported: \(allowed.joined(separator: ", ")))")
            }
            if let modelElement = try reader.child(element, "model") {
                let name = reader.attribute(modelElement, "name")
                let allowedNames = ["pcie-root-port": ["pcie-root-port", "ioh3420"], "pci-bridge": ["pci-bridge"]][model] ?? []
                if let name, !allowedNames.contains(name) {
                    throw reader.unsupported(modelElement, "PCI controller device '\(name)'")
                }
                controller.deviceName = name
            }
            if let target = try reader.child(element, "target") {
                controller.chassis = try reader.intAttribute(target, "chassis", range: 0...255)
                    ?? reader.intAttribute(target, "chassisNr", range: 1...255)
                controller.port = try reader.intAttribute(target, "port", range: 0...255)
                reader.ignoreAttributes(target, "busNr")
            }
        case .usb:
            let allowed = ["piix3-uhci", "qemu-xhci", "nec-xhci", "ehci", "ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3", "none"]
            if let model = controller.model, !allowed.contains(model) {
                throw reader.unsupported(element, "USB controller model '\(model)' (supported: \(allowed.joined(separator: ", ")))")
            }
            controller.ports = try reader.intAttribute(element, "ports", range: 1...15)
            if let master = try reader.child(element, "master") {
                guard controller.model?.hasPrefix("ich9-uhci") == true else {
                    throw reader.error(master, "<master> makes a companion: only ich9-uhci1, ich9-uhci2 and ich9-uhci3 controllers take it")
                }
                guard let start = try reader.intAttribute(master, "startport", range: 0...5) else {
                    throw reader.error(master, "missing attribute 'startport'")
                }
                controller.usbMasterStartPort = start
            }
        case .ide, .sata:
            break
        case .scsi:
            let allowed = ["lsilogic", "virtio-scsi", "virtio-non-transitional"]
            if let model = controller.model, !allowed.contains(model) {
                throw reader.unsupported(element, "SCSI controller model '\(model)' (supported: \(allowed.joined(separator: ", ")))")
            }
            if let driver = try reader.child(element, "driver") {
                guard controller.model == "virtio-scsi" || controller.model == "virtio-non-transitional" else {
                    throw reader.error(driver, "SCSI controller <driver> settings need model='virtio-scsi'")
                }
                controller.scsiQueues = try reader.intAttribute(driver, "queues", range: 1...1024)
                controller.scsiCmdPerLun = try reader.intAttribute(driver, "cmd_per_lun", range: 1...65535)
                controller.scsiMaxSectors = try reader.intAttribute(driver, "max_sectors", range: 1...65535)
                controller.scsiIOEventFD = try reader.boolAttribute(driver, "ioeventfd")
                controller.scsiIOThread = try reader.intAttribute(driver, "iothread", range: 1...Int(Int32.max))
            }
        case .fdc:
            // The i440fx board's built-in floppy controller: no device of its own.
            guard index == 0 else { throw reader.error(element, "only one floppy controller (index 0) exists") }
        case .virtioSerial:
            if let model = controller.model, model != "virtio", model != "virtio-non-transitional" {
                throw reader.unsupported(element, "virtio-serial controller model '\(model)' (supported: virtio, virtio-non-transitional)")
            }
            controller.ports = try reader.intAttribute(element, "ports", range: 1...31)
            if element.attribute("vectors") != nil { throw reader.unsupported(element, "virtio-serial vectors") }
        }
        if kind != .scsi, let driver = try reader.child(element, "driver") { throw reader.unsupported(driver, "controller <driver> tuning") }
        controller.alias = try userAlias(element)
        switch try parseAddress(element) {
        case .pci(let address)?: controller.pciAddress = address
        case nil: break
        default: throw reader.error(element, "a controller takes a PCI address")
        }
        return controller
    }

    // MARK: - Interfaces

    func parseInterface(_ element: XMLElement) throws -> DomainSpec.Interface {
        let typeRaw = try reader.requiredAttribute(element, "type")
        guard let kind = DomainSpec.Interface.Kind(rawValue: typeRaw) else {
            throw reader.unsupported(element, "interface type='\(typeRaw)' (vmshim supports user, ethernet, bridge, network, direct, mcast, server, client and udp)")
        }
        var mac = ""
        var macGenerated = true
        if let macElement = try reader.child(element, "mac") {
            let address = try reader.requiredAttribute(macElement, "address")
            guard DomainParser.isValidMAC(address) else {
                throw reader.error(macElement, "'\(address)' is not a MAC address like 52:54:00:12:34:56")
            }
            guard let first = UInt8(address.prefix(2), radix: 16), first & 1 == 0 else {
                throw reader.error(macElement, "'\(address)' is a multicast MAC address; a NIC needs a unicast one")
            }
            mac = address.lowercased()
            macGenerated = false
            reader.ignoreAttributes(macElement, "type", "check")
        }
        var model = DomainSpec.Interface.Model.rtl8139  // libvirt's default NIC model on x86
        var nonTransitional = false
        if let modelElement = try reader.child(element, "model") {
            let type = try reader.requiredAttribute(modelElement, "type")
            nonTransitional = type == "virtio-non-transitional"
            guard let value = nonTransitional ? .virtio : DomainSpec.Interface.Model(rawValue: type) else {
                throw reader.unsupported(
                    modelElement, "NIC model '\(type)' (supported: virtio, virtio-non-transitional, e1000, e1000e, rtl8139)")
            }
            model = value
        }
        var targetDev: String?
        var managed = true
        if let target = try reader.child(element, "target") {
            targetDev = reader.attribute(target, "dev")
            managed = try reader.boolAttribute(target, "managed") ?? true
            if !kind.usesTap, kind != .direct { reader.ignoreAttributes(target, "dev") }
        }
        if kind == .direct, let dev = targetDev {
            guard !dev.isEmpty, dev.utf8.count < 16, !dev.contains("/"), !dev.contains(" ") else {
                throw reader.error(element, "macvtap device name '\(dev)' must be 1 to 15 characters without '/' or spaces")
            }
            // libvirt's generated names are output only.
            if dev.hasPrefix("macvtap") || dev.hasPrefix("macvlan") { targetDev = nil }
            if managed == false { throw reader.unsupported(element, "an unmanaged macvtap device (managed='no')") }
        }
        if let dev = targetDev, kind.usesTap {
            guard !dev.isEmpty, dev.utf8.count < 16, !dev.contains("/"), !dev.contains(" ") else {
                throw reader.error(element, "tap device name '\(dev)' must be 1 to 15 characters without '/' or spaces")
            }
            // libvirt reserves vnetN/macvtapN names for generated devices.
            if managed, dev.hasPrefix("vnet") || dev.hasPrefix("macvtap") {
                targetDev = nil
            }
        }
        if kind.usesTap, !managed, targetDev == nil {
            throw reader.error(element, "managed='no' needs <target dev=…> naming an existing tap device")
        }
        var mtu: Int?
        if let mtuElement = try reader.child(element, "mtu") {
            mtu = try reader.intAttribute(mtuElement, "size", range: 68...65535)
        }
        var linkUp = true
        if let link = try reader.child(element, "link") {
            let state = try reader.requiredAttribute(link, "state")
            guard state == "up" || state == "down" else { throw reader.error(link, "link state must be up or down") }
            linkUp = state == "up"
        }
        var tuning = DomainSpec.VirtioNetTuning()
        if let driver = try reader.child(element, "driver") {
            tuning = try parseVirtioNetDriver(driver, model: model)
        }
        var script: String?
        if let scriptElement = try reader.child(element, "script") {
            guard kind.usesTap else {
                throw reader.unsupported(scriptElement, "<script> on interface type='\(typeRaw)' (it applies to ethernet and bridge)")
            }
            let path = try reader.requiredAttribute(scriptElement, "path")
            // libvirt accepts an empty path as "no script".
            guard path.isEmpty || path.hasPrefix("/") else {
                throw reader.error(scriptElement, "script path '\(path)' must be absolute")
            }
            script = path.isEmpty ? nil : path
        }
        var rom: (enabled: Bool?, bar: Bool?, file: String?) = (nil, nil, nil)
        if let romElement = try reader.child(element, "rom") {
            rom.enabled = try reader.boolAttribute(romElement, "enabled")
            rom.bar = try reader.boolAttribute(romElement, "bar")
            if let file = reader.attribute(romElement, "file") {
                guard file.isEmpty || file.hasPrefix("/") else { throw reader.error(romElement, "rom file '\(file)' must be absolute") }
                rom.file = file
            }
            if rom.enabled == false, rom.bar != nil || rom.file != nil {
                throw reader.error(romElement, "a disabled ROM takes no bar or file (libvirt refuses it too)")
            }
        }
        var bridge: String?
        if kind == .bridge {
            guard let source = try reader.child(element, "source"), let name = reader.attribute(source, "bridge"), !name.isEmpty else {
                throw reader.error(element, "interface type='bridge' needs <source bridge='NAME'/>")
            }
            guard name.utf8.count < 16, !name.contains("/"), !name.contains(" ") else {
                throw reader.error(source, "bridge name '\(name)' must be 1 to 15 characters without '/' or spaces")
            }
            bridge = name
            if managed == false { throw reader.error(element, "a bridge interface's tap is created by vmshim (managed='no' is for type='ethernet')") }
        }
        var network: (name: String, portID: String?)?
        if kind == .network {
            guard let source = try reader.child(element, "source"), let name = reader.attribute(source, "network"), !name.isEmpty else {
                throw reader.error(element, "interface type='network' needs <source network='NAME'/> naming a libvirt network")
            }
            if reader.attribute(source, "portgroup") != nil {
                throw reader.unsupported(source, "network port groups (portgroup=)")
            }
            if managed == false { throw reader.error(element, "a network interface's tap is created by vmshim (managed='no' is for type='ethernet')") }
            // The live definition's port and bridge: a reattaching shim releases that port when the VM ends.
            network = (name, reader.attribute(source, "portid"))
            if let live = reader.attribute(source, "bridge") { bridge = live }
        }
        var direct: (device: String, mode: String)?
        if kind == .direct {
            guard let source = try reader.child(element, "source"), let dev = reader.attribute(source, "dev"), !dev.isEmpty else {
                throw reader.error(element, "interface type='direct' needs <source dev='HOST-DEVICE' mode='vepa|bridge|private|passthrough'/>")
            }
            let mode = reader.attribute(source, "mode") ?? "vepa"
            guard ["vepa", "bridge", "private", "passthrough"].contains(mode) else {
                throw reader.error(source, "mode='\(mode)' must be vepa, bridge, private or passthrough")
            }
            direct = (dev, mode)
        }
        var sendBuffer: Int?
        if let tune = try reader.child(element, "tune") {
            guard kind.usesTap || kind == .direct else {
                throw reader.unsupported(tune, "<tune> on interface type='\(typeRaw)' (it sets a tap's send buffer)")
            }
            if let sndbuf = try reader.child(tune, "sndbuf") {
                guard let value = Int(sndbuf.text.trimmingWhitespace()), value >= 0 else {
                    throw reader.error(sndbuf, "<sndbuf> must be a number of bytes")
                }
                sendBuffer = value
            }
        }
        var endpoint: (String, String?)?
        if kind == .mcast || kind == .server || kind == .client || kind == .udp {
            endpoint = try parseSocketEndpoint(element, kind: kind)
        }
        var userIP: (network: String?, ipv6: String?, ipv6Length: Int?) = (nil, nil, nil)
        if kind == .user {
            userIP = try parseUserNetworkIPs(element)
        }
        for unsupported in ["ip", "route", "bandwidth", "filterref", "backend", "virtualport", "source", "guest", "coalesce", "teaming", "port"]
        where !(unsupported == "source" && (endpoint != nil || bridge != nil || network != nil || direct != nil)) && !(unsupported == "ip" && kind == .user) {
            if let node = try reader.child(element, unsupported) {
                throw reader.unsupported(node, "interface <\(unsupported)>")
            }
        }
        var nic = DomainSpec.Interface(
            kind: kind, mac: mac, macGenerated: macGenerated, model: model, targetDev: kind.usesTap || kind == .direct ? targetDev : nil,
            managedTap: managed, mtu: mtu, linkUp: linkUp, bootOrder: try bootOrder(element))
        if tuning.queues != nil, !kind.usesTap {
            throw reader.unsupported(element.firstElement(named: "driver") ?? element, "NIC multiqueue on interface type='\(typeRaw)' (ethernet and bridge taps have it)")
        }
        nic.virtioTuning = tuning
        nic.bridge = bridge
        nic.network = network?.name
        nic.networkPortID = network?.portID
        nic.sendBuffer = sendBuffer
        if let direct { (nic.directDevice, nic.directMode) = direct }
        nic.socketEndpoint = endpoint?.0
        nic.socketLocal = endpoint?.1
        nic.nonTransitional = nonTransitional
        (nic.romEnabled, nic.romBar, nic.romFile) = rom
        nic.script = script
        (nic.userNetwork, nic.userIPv6Prefix, nic.userIPv6PrefixLength) = userIP
        nic.alias = try userAlias(element)
        nic.pciAddress = try pciAddress(element)
        return nic
    }

    /// type='user' `<ip>`s as libvirt 9.0 reads them: at most one per
    /// family; the IPv4 one is the slirp network (`address/prefix`), the
    /// IPv6 one its prefix; a missing prefix leaves QEMU's default.
    func parseUserNetworkIPs(_ element: XMLElement) throws -> (String?, String?, Int?) {
        var network: String?
        var ipv6: String?
        var ipv6Length: Int?
        for ip in reader.children(element, "ip") {
            let family = reader.attribute(ip, "family") ?? "ipv4"
            let address = try reader.requiredAttribute(ip, "address")
            if reader.attribute(ip, "peer") != nil { throw reader.unsupported(ip, "a peer address on a user interface") }
            switch family {
            case "ipv4":
                guard network == nil else { throw reader.error(ip, "only one IPv4 <ip> is allowed on a user interface") }
                let parts = address.split(separator: ".")
                guard parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) else {
                    throw reader.error(ip, "address='\(address)' is not an IPv4 address")
                }
                // Without a prefix QEMU's default netmask applies (libvirt passes the address alone).
                let prefix = try reader.intAttribute(ip, "prefix", range: 1...32)
                network = prefix.map { "\(address)/\($0)" } ?? address
            case "ipv6":
                guard ipv6 == nil else { throw reader.error(ip, "only one IPv6 <ip> is allowed on a user interface") }
                guard address.contains(":"), address.allSatisfy({ $0.isHexDigit || $0 == ":" }) else {
                    throw reader.error(ip, "address='\(address)' is not an IPv6 address")
                }
                ipv6 = address
                ipv6Length = try reader.intAttribute(ip, "prefix", range: 1...128)
            default:
                throw reader.error(ip, "family='\(family)' must be ipv4 or ipv6")
            }
        }
        return (network, ipv6, ipv6Length)
    }

    /// `<source address port>` (and udp's `<local address port>`) of a socket
    /// NIC, as QEMU's `host:port` strings.
    func parseSocketEndpoint(_ element: XMLElement, kind: DomainSpec.Interface.Kind) throws -> (String, String?) {
        guard let source = try reader.child(element, "source") else {
            throw reader.error(element, "interface type='\(kind.rawValue)' needs <source address port>")
        }
        func endpoint(_ node: XMLElement) throws -> String {
            guard let address = reader.attribute(node, "address"), !address.isEmpty else {
                throw reader.error(node, "missing address='…'")
            }
            guard let port = try reader.intAttribute(node, "port", range: 1...65535) else { throw reader.error(node, "missing port='…'") }
            return "\(address):\(port)"
        }
        let remote = try endpoint(source)
        var local: String?
        if let localElement = try reader.child(source, "local") {
            guard kind == .udp else { throw reader.unsupported(localElement, "<local> on interface type='\(kind.rawValue)' (udp only)") }
            local = try endpoint(localElement)
        } else if kind == .udp {
            throw reader.error(source, "interface type='udp' needs <local address port> inside its <source> (libvirt refuses it too)")
        }
        return (remote, local)
    }

    /// `<driver>` of a NIC: the virtio-net knobs libvirt passes on argv, and
    /// `queues` (a multiqueue tap). vhost and the offload switches (`<host>`,
    /// `<guest>`) are refused.
    func parseVirtioNetDriver(_ driver: XMLElement, model: DomainSpec.Interface.Model) throws -> DomainSpec.VirtioNetTuning {
        var tuning = DomainSpec.VirtioNetTuning()
        if let name = reader.attribute(driver, "name"), name != "qemu" {
            throw reader.unsupported(driver, "NIC driver name='\(name)' (vmshim runs the virtio-net backend in QEMU: name='qemu')")
        }
        if let txmode = reader.attribute(driver, "txmode") {
            switch txmode {
            case "iothread": tuning.tx = "bh"
            case "timer": tuning.tx = "timer"
            default: throw reader.error(driver, "txmode='\(txmode)' must be iothread or timer")
            }
        }
        tuning.ioeventfd = try reader.boolAttribute(driver, "ioeventfd")
        tuning.eventIdx = try reader.boolAttribute(driver, "event_idx")
        for (attribute, range) in [("rx_queue_size", 256...1024), ("tx_queue_size", 256...1024)] {
            guard let size = try reader.intAttribute(driver, attribute, range: range) else { continue }
            guard size & (size - 1) == 0 else { throw reader.error(driver, "\(attribute)='\(size)' must be a power of two") }
            if attribute == "rx_queue_size" { tuning.rxQueueSize = size } else { tuning.txQueueSize = size }
        }
        if let queues = try reader.intAttribute(driver, "queues", range: 1...256), queues > 1 {
            tuning.queues = queues
        }
        for child in ["host", "guest"] {
            if let node = try reader.child(driver, child) { throw reader.unsupported(node, "NIC offload settings <\(child)>") }
        }
        if tuning != DomainSpec.VirtioNetTuning(), model != .virtio {
            throw reader.error(driver, "NIC <driver> settings need model type='virtio'")
        }
        return tuning
    }

    static func isValidMAC(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && UInt8($0, radix: 16) != nil }
    }

    // MARK: - Character devices

    enum CharKind { case serial, console, channel, parallel }

    /// `host` (required, as libvirt) and `service` (a port) of a tcp/udp `<source>`.
    func hostAndService(_ source: XMLElement) throws -> (String, Int) {
        guard let host = reader.attribute(source, "host"), !host.isEmpty else {
            throw reader.error(source, "a network character device needs host='…'")
        }
        guard let service = reader.attribute(source, "service") else { throw reader.error(source, "missing service='PORT'") }
        guard let port = Int(service), (1...65535).contains(port) else {
            throw reader.error(source, "service='\(service)' must be a port number (1 to 65535)")
        }
        return (host, port)
    }

    func parseCharDevice(_ element: XMLElement, kind: CharKind) throws -> DomainSpec.CharDevice {
        let type = reader.attribute(element, "type") ?? "pty"
        let sourceElements = reader.children(element, "source")
        let source = sourceElements.first
        if sourceElements.count > 1, type != "udp" { throw reader.unsupported(sourceElements[1], "more than one <source>") }
        let backend: DomainSpec.CharDevice.Backend
        switch type {
        case "pty":
            // A pty source path is output only (libvirt reports the allocated /dev/pts/N).
            if let source { reader.ignoreAttributes(source, "path") }
            backend = .pty
        case "null":
            backend = .null
        case "file":
            guard let source, let path = reader.attribute(source, "path"), path.hasPrefix("/") else {
                throw reader.error(element, "a file character device needs <source path='/absolute/path'/>")
            }
            backend = .file(path: path, append: try reader.boolAttribute(source, "append"))
        case "unix" where source == nil && kind == .channel:
            // libvirt binds a socket of its own choosing for a channel without a source.
            backend = .unixListen(path: "")
        case "unix":
            guard let source else { throw reader.error(element, "a unix character device needs a <source>") }
            let mode = reader.attribute(source, "mode") ?? "connect"
            let path = reader.attribute(source, "path")
            if let path, !path.hasPrefix("/") {
                throw reader.error(source, "path='\(path)' must be an absolute path")
            }
            var reconnect: Int?
            if let reconnectElement = try reader.child(source, "reconnect") {
                if try reader.boolAttribute(reconnectElement, "enabled") == true {
                    reconnect = try reader.intAttribute(reconnectElement, "timeout", range: 1...3600) ?? 1
                }
            }
            switch mode {
            case "bind":
                guard let path else {
                    guard kind == .channel else {
                        throw reader.error(source, "mode='bind' needs a path")
                    }
                    backend = .unixListen(path: "")  // a path under the run directory is chosen later
                    break
                }
                backend = .unixListen(path: path)
            case "connect":
                guard let path else { throw reader.error(source, "mode='connect' needs a path") }
                backend = .unixConnect(path: path, reconnectSeconds: reconnect)
            default:
                throw reader.error(source, "mode='\(mode)' must be bind or connect")
            }
            if let seclabel = try reader.child(source, "seclabel") { throw reader.unsupported(seclabel, "seclabel") }
        case "tcp":
            guard let source else { throw reader.error(element, "a tcp character device needs <source mode host service/>") }
            let mode = reader.attribute(source, "mode") ?? "connect"
            guard mode == "bind" || mode == "connect" else { throw reader.error(source, "mode='\(mode)' must be bind or connect") }
            let (host, port) = try hostAndService(source)
            var telnet = false
            if let protocolElement = try reader.child(element, "protocol") {
                switch reader.attribute(protocolElement, "type") ?? "raw" {
                case "raw": break
                case "telnet": telnet = true
                case let other: throw reader.unsupported(protocolElement, "character device protocol '\(other)' (raw or telnet)")
                }
            }
            var reconnect: Int?
            if let reconnectElement = try reader.child(source, "reconnect"), try reader.boolAttribute(reconnectElement, "enabled") == true {
                guard mode == "connect" else { throw reader.error(reconnectElement, "<reconnect> applies to mode='connect'") }
                reconnect = try reader.intAttribute(reconnectElement, "timeout", range: 1...3600) ?? 1
            }
            if reader.attribute(source, "tls") != nil { throw reader.unsupported(source, "TLS on a tcp character device") }
            backend = .tcp(host: host, port: port, listen: mode == "bind", telnet: telnet, reconnectSeconds: reconnect)
        case "udp":
            var remote: (String, Int)?
            var local: (String, Int)?
            for udpSource in sourceElements {
                let mode = reader.attribute(udpSource, "mode") ?? "connect"
                switch mode {
                case "connect" where remote == nil: remote = try hostAndService(udpSource)
                case "bind" where local == nil: local = try hostAndService(udpSource)
                default: throw reader.error(udpSource, "a udp character device takes one connect and at most one bind <source>")
                }
            }
            guard let remote else { throw reader.error(element, "a udp character device needs <source mode='connect' host service/>") }
            backend = .udp(host: remote.0, port: remote.1, localHost: local?.0, localPort: local?.1)
        case "spicevmc" where kind == .channel:
            // The SPICE agent channel; it needs SPICE graphics (checked after parsing).
            backend = .spicevmc
        default:
            throw reader.unsupported(
                element, "character device type='\(type)' on <\(element.name)> (vmshim supports pty, file, unix, tcp, udp and null, and spicevmc channels)")
        }
        var device = DomainSpec.CharDevice(backend: backend)
        if let target = try reader.child(element, "target") {
            let targetType = reader.attribute(target, "type")
            switch (kind, targetType) {
            case (.serial, nil), (.serial, "isa-serial"):
                device.targetType = .isaSerial
            case (.console, nil), (.console, "serial"):
                device.targetType = .serial
            case (.console, "virtio"):
                throw reader.unsupported(target, "virtio consoles")
            case (.channel, "virtio"):
                device.targetType = .virtio
                // libvirt names a SPICE agent channel that has no name.
                device.targetName = reader.attribute(target, "name") ?? (backend == .spicevmc ? "com.redhat.spice.0" : nil)
                reader.ignoreAttributes(target, "state")
            case (.channel, nil):
                throw reader.error(target, "a channel needs target type='virtio'")
            case (.parallel, nil):
                break
            default:
                throw reader.unsupported(target, "target type='\(targetType ?? "")' for <\(element.name)>")
            }
            device.targetPort = try reader.intAttribute(target, "port", range: kind == .parallel ? 0...2 : 0...3)
            if let model = try reader.child(target, "model") {
                let name = reader.attribute(model, "name")
                guard name == nil || name == "isa-serial" else {
                    throw reader.unsupported(model, "serial model '\(name ?? "")'")
                }
            }
        } else {
            switch kind {
            case .serial: device.targetType = .isaSerial
            case .console: device.targetType = .serial
            case .channel: throw reader.error(element, "a channel needs <target type='virtio' name=…/>")
            case .parallel: break
            }
        }
        if let log = try reader.child(element, "log") {
            let file = try reader.requiredAttribute(log, "file")
            guard file.hasPrefix("/") else { throw reader.error(log, "file='\(file)' must be an absolute path") }
            device.logFile = file
            device.logAppend = try reader.boolAttribute(log, "append")
        }
        if type != "tcp", let protocolElement = try reader.child(element, "protocol") {
            throw reader.unsupported(protocolElement, "a <protocol> on type='\(type)' (tcp only)")
        }
        device.alias = try userAlias(element)
        switch try parseAddress(element) {
        case nil: break
        case .virtioSerial(let controller, _, let port)? where kind == .channel:
            guard controller == 0 else {
                throw reader.unsupported(element, "channels on a virtio-serial controller other than index 0")
            }
            device.targetPort = port
        case .isa?:
            throw reader.unsupported(element, "an ISA address (iobase/irq) on <\(element.name)>")
        default:
            throw reader.error(element, "unsupported address for <\(element.name)>")
        }
        return device
    }

    // MARK: - Input, graphics, video

    func parseInput(_ element: XMLElement) throws -> DomainSpec.Input {
        let typeRaw = try reader.requiredAttribute(element, "type")
        guard let kind = DomainSpec.Input.Kind(rawValue: typeRaw) else {
            throw reader.unsupported(element, "input type='\(typeRaw)'")
        }
        let busRaw = reader.attribute(element, "bus") ?? (kind == .tablet ? "usb" : "ps2")
        guard let bus = DomainSpec.Input.Bus(rawValue: busRaw) else {
            throw reader.unsupported(element, "input bus='\(busRaw)'")
        }
        if kind == .tablet, bus == .ps2 { throw reader.error(element, "a tablet cannot use the ps2 bus") }
        var input = DomainSpec.Input(kind: kind, bus: bus)
        input.alias = try userAlias(element)
        switch try parseAddress(element) {
        case nil: break
        case .usb(let port)?:
            guard bus == .usb else { throw reader.error(element, "only USB input devices take a USB address") }
            input.usbPort = port
        case .pci(let address)?:
            guard bus == .virtio else { throw reader.error(element, "only virtio input devices take a PCI address") }
            input.pciAddress = address
        default: throw reader.error(element, "unsupported address for an input device")
        }
        return input
    }

    func parseGraphics(_ element: XMLElement) throws -> DomainSpec.Graphics {
        let type = try reader.requiredAttribute(element, "type")
        guard let kind = DomainSpec.Graphics.Kind(rawValue: type) else {
            throw reader.unsupported(element, "graphics type='\(type)' (vmshim supports vnc and spice, or no <graphics> at all)")
        }
        let name = kind == .vnc ? "VNC" : "SPICE"
        var port = try reader.intAttribute(element, "port", range: -1...65535)
        var autoport = try reader.boolAttribute(element, "autoport") ?? (port == nil || port == -1)
        if port == -1 {
            port = nil
            autoport = true
        }
        if let port, !autoport, port < 5900 {
            throw reader.error(element, "\(name) port \(port) must be 5900 or above")
        }
        let recordedPort = autoport ? port : nil
        if autoport { port = nil }
        var listen = DomainSpec.Graphics.Listen.address("127.0.0.1")
        if let address = reader.attribute(element, "listen") { listen = .address(address) }
        if let listenElement = try reader.child(element, "listen") {
            let listenType = reader.attribute(listenElement, "type") ?? "address"
            switch listenType {
            case "address":
                if let address = reader.attribute(listenElement, "address") { listen = .address(address) }
            case "socket":
                guard let socket = reader.attribute(listenElement, "socket"), socket.hasPrefix("/") else {
                    throw reader.error(listenElement, "a socket listen needs socket='/absolute/path'")
                }
                listen = .socket(socket)
            case "none":
                listen = .none
            default:
                throw reader.unsupported(listenElement, "listen type='\(listenType)'")
            }
            reader.ignoreAttributes(listenElement, "autoGenerated")
        }
        let password = reader.attribute(element, "passwd")
        if password != nil { throw reader.unsupported(element, "\(name) passwords") }
        var unsupported = ["keymap", "passwdValidTo", "connected"]
        unsupported += kind == .vnc ? ["websocket", "sharePolicy"] : ["tlsPort", "defaultMode"]
        for attribute in unsupported {
            if reader.attribute(element, attribute) != nil { throw reader.unsupported(element, "\(name) \(attribute)") }
        }
        var graphics = DomainSpec.Graphics(port: port, autoport: autoport, listen: listen, passwordSet: false)
        graphics.kind = kind
        graphics.recordedPort = recordedPort
        if kind == .spice { graphics.spice = try parseSpice(element) }
        return graphics
    }

    /// SPICE's child elements, checked as libvirt 9.0 checks them.
    func parseSpice(_ element: XMLElement) throws -> DomainSpec.Graphics.Spice {
        func value(_ child: String, _ attribute: String, _ allowed: [String]) throws -> String? {
            guard let node = try reader.child(element, child) else { return nil }
            let text = try reader.requiredAttribute(node, attribute)
            guard allowed.contains(text) else {
                throw reader.error(node, "\(attribute)='\(text)' must be one of \(allowed.joined(separator: ", "))")
            }
            return text
        }
        if let channel = try reader.child(element, "channel") { throw reader.unsupported(channel, "per-channel SPICE modes (TLS)") }
        if let gl = try reader.child(element, "gl"), try reader.boolAttribute(gl, "enable") == true {
            throw reader.unsupported(gl, "SPICE OpenGL")
        }
        var spice = DomainSpec.Graphics.Spice()
        spice.agentMouse = try value("mouse", "mode", ["server", "client"]).map { $0 == "client" }
        spice.imageCompression = try value("image", "compression", ["auto_glz", "auto_lz", "quic", "glz", "lz", "off"])
        spice.jpegCompression = try value("jpeg", "compression", ["auto", "never", "always"])
        spice.zlibCompression = try value("zlib", "compression", ["auto", "never", "always"])
        spice.playbackCompression = try value("playback", "compression", ["on", "off"])
        spice.streamingMode = try value("streaming", "mode", ["filter", "all", "off"])
        spice.copyPaste = try value("clipboard", "copypaste", ["yes", "no"]).map { $0 == "yes" }
        spice.fileTransfer = try value("filetransfer", "enable", ["yes", "no"]).map { $0 == "yes" }
        return spice
    }

    /// `<redirdev bus='usb' type='spicevmc'>`: a usb-redir device on the
    /// SPICE connection.
    func parseRedirdev(_ element: XMLElement) throws -> DomainSpec.Redirdev {
        let bus = reader.attribute(element, "bus") ?? "usb"
        guard bus == "usb" else { throw reader.error(element, "bus='\(bus)' must be usb") }
        let type = try reader.requiredAttribute(element, "type")
        guard type == "spicevmc" else {
            throw reader.unsupported(element, "redirdev type='\(type)' (only spicevmc)")
        }
        if let boot = try reader.child(element, "boot") { throw reader.unsupported(boot, "booting from a redirected USB device") }
        var redirdev = DomainSpec.Redirdev()
        redirdev.alias = try userAlias(element)
        switch try parseAddress(element) {
        case nil: break
        case .usb(let port)?:
            redirdev.usbPort = port
        default:
            throw reader.error(element, "a redirdev takes a USB address")
        }
        return redirdev
    }

    func parseHub(_ element: XMLElement) throws -> DomainSpec.Hub {
        let type = try reader.requiredAttribute(element, "type")
        guard type == "usb" else { throw reader.error(element, "hub type='\(type)' must be usb") }
        var hub = DomainSpec.Hub()
        hub.alias = try userAlias(element)
        switch try parseAddress(element) {
        case nil: break
        case .usb(let port)?: hub.usbPort = port
        default: throw reader.error(element, "a USB hub takes a USB address")
        }
        return hub
    }

    func parseVideo(_ element: XMLElement) throws -> DomainSpec.Video {
        guard let model = try reader.child(element, "model") else {
            throw reader.error(element, "missing <model type=…/>")
        }
        let typeRaw = try reader.requiredAttribute(model, "type")
        guard let type = DomainSpec.Video.Model(rawValue: typeRaw) else {
            throw reader.unsupported(model, "video model '\(typeRaw)' (supported: vga, cirrus, virtio, bochs, qxl, none)")
        }
        var video = DomainSpec.Video(
            model: type, vramKiB: try reader.intAttribute(model, "vram", range: 1024...1_048_576),
            ramKiB: nil, vgamemKiB: nil, vram64KiB: nil,
            heads: try reader.intAttribute(model, "heads", range: 1...16),
            primary: try reader.boolAttribute(model, "primary") ?? false)
        if type == .qxl {
            video.ramKiB = try reader.intAttribute(model, "ram", range: 1024...1_048_576)
            video.vgamemKiB = try reader.intAttribute(model, "vgamem", range: 1024...262_144)
            video.vram64KiB = try reader.intAttribute(model, "vram64", range: 0...67_108_864)
        } else {
            for qxlOnly in ["ram", "vgamem", "vram64"] where model.attribute(qxlOnly) != nil {
                throw reader.error(model, "\(qxlOnly) is only valid for qxl video")
            }
        }
        if type == .none, video.vramKiB != nil { throw reader.error(model, "video type none takes no vram") }
        if let acceleration = try reader.child(model, "acceleration") { throw reader.unsupported(acceleration, "video acceleration") }
        if let driver = try reader.child(element, "driver") { throw reader.unsupported(driver, "video <driver>") }
        video.alias = try userAlias(element)
        video.pciAddress = try pciAddress(element)
        return video
    }

    // MARK: - Balloon, RNG, panic

    func parseMemballoon(_ element: XMLElement) throws -> DomainSpec.Memballoon {
        let modelRaw = try reader.requiredAttribute(element, "model")
        let nonTransitional = modelRaw == "virtio-non-transitional"
        guard let model = nonTransitional ? .virtio : DomainSpec.Memballoon.Model(rawValue: modelRaw) else {
            throw reader.unsupported(element, "memballoon model '\(modelRaw)' (supported: virtio, virtio-non-transitional, none)")
        }
        var balloon = DomainSpec.Memballoon(
            model: model, autodeflate: try reader.boolAttribute(element, "autodeflate"),
            freePageReporting: try reader.boolAttribute(element, "freePageReporting"))
        if let stats = try reader.child(element, "stats") {
            balloon.statsPeriodSeconds = try reader.intAttribute(stats, "period", range: 0...Int(Int32.max))
        }
        if let driver = try reader.child(element, "driver") { throw reader.unsupported(driver, "memballoon <driver>") }
        balloon.nonTransitional = nonTransitional
        balloon.alias = try userAlias(element)
        balloon.pciAddress = try pciAddress(element)
        if model == .none, balloon.pciAddress != nil || balloon.statsPeriodSeconds != nil {
            throw reader.error(element, "memballoon model='none' takes no address or stats")
        }
        return balloon
    }

    func parseRNG(_ element: XMLElement) throws -> DomainSpec.RNG {
        let model = try reader.requiredAttribute(element, "model")
        guard model == "virtio" || model == "virtio-non-transitional" else {
            throw reader.unsupported(element, "rng model '\(model)' (supported: virtio, virtio-non-transitional)")
        }
        guard let backendElement = try reader.child(element, "backend") else {
            throw reader.error(element, "missing <backend model='random'>/dev/urandom</backend>")
        }
        let backendModel = try reader.requiredAttribute(backendElement, "model")
        let backend: DomainSpec.RNG.Backend
        switch backendModel {
        case "random":
            let path = backendElement.text.trimmingWhitespace()
            let source = path.isEmpty ? "/dev/urandom" : path
            guard source == "/dev/urandom" || source == "/dev/random" || source == "/dev/hwrng" else {
                throw reader.error(backendElement, "random backend '\(source)' must be /dev/urandom, /dev/random or /dev/hwrng")
            }
            backend = .random(path: source)
        case "builtin":
            backend = .builtin
        default:
            throw reader.unsupported(backendElement, "rng backend '\(backendModel)' (supported: random, builtin)")
        }
        var rng = DomainSpec.RNG(backend: backend)
        if let rate = try reader.child(element, "rate") {
            rng.rateBytes = try reader.intAttribute(rate, "bytes", range: 1...Int(Int32.max))
            rng.ratePeriodMilliseconds = try reader.intAttribute(rate, "period", range: 1...Int(Int32.max))
            if rng.rateBytes == nil { throw reader.error(rate, "missing attribute 'bytes'") }
        }
        if let driver = try reader.child(element, "driver") { throw reader.unsupported(driver, "rng <driver>") }
        rng.alias = try userAlias(element)
        rng.pciAddress = try pciAddress(element)
        rng.nonTransitional = model == "virtio-non-transitional"
        return rng
    }

    /// `<iommu model='intel'>` with its `<driver>` settings. Interrupt
    /// remapping needs `<ioapic driver='qemu'/>` (checked with the features);
    /// `eim` needs it and KVM's split irqchip, so it is refused under TCG.
    func parseIOMMU(_ element: XMLElement) throws -> DomainSpec.IOMMU {
        let modelName = try reader.requiredAttribute(element, "model")
        guard let model = DomainSpec.IOMMU.Model(rawValue: modelName) else {
            throw reader.unsupported(element, "iommu model '\(modelName)' (intel and virtio are supported)")
        }
        var iommu = DomainSpec.IOMMU()
        iommu.model = model
        if model == .virtio {
            if let driver = try reader.child(element, "driver") {
                throw reader.error(driver, "a virtio IOMMU takes no <driver> options (they are the intel IOMMU's)")
            }
            iommu.pciAddress = try pciAddress(element)
        }
        if let driver = try reader.child(element, "driver") {
            iommu.interruptRemapping = try reader.boolAttribute(driver, "intremap")
            iommu.extendedInterruptMode = try reader.boolAttribute(driver, "eim")
            if iommu.extendedInterruptMode == true, iommu.interruptRemapping != true {
                throw reader.error(driver, "eim='on' needs intremap='on' (libvirt refuses it too)")
            }
            iommu.cachingMode = try reader.boolAttribute(driver, "caching_mode")
            iommu.deviceIOTLB = try reader.boolAttribute(driver, "iotlb")
            if let bits = try reader.intAttribute(driver, "aw_bits") {
                guard bits == 39 || bits == 48 else { throw reader.error(driver, "aw_bits='\(bits)' must be 39 or 48") }
                iommu.addressWidthBits = bits
            }
        }
        iommu.alias = try userAlias(element)
        return iommu
    }

    /// `<sound model>` with `<codec type>`s, on the one audio backend (id 1).
    func parseSound(_ element: XMLElement) throws -> DomainSpec.Sound {
        let modelRaw = try reader.requiredAttribute(element, "model")
        guard let model = DomainSpec.Sound.Model(rawValue: modelRaw) else {
            let why = modelRaw == "pcspk" ? "; QEMU 7.2 dropped -soundhw, so libvirt 9.0 fails on it too" : ""
            throw reader.unsupported(element, "sound model '\(modelRaw)' (supported: ich9, ich6, ac97, es1370, sb16, usb\(why))")
        }
        var sound = DomainSpec.Sound(model: model)
        for codec in reader.children(element, "codec") {
            let type = try reader.requiredAttribute(codec, "type")
            guard ["duplex", "micro", "output"].contains(type) else {
                throw reader.error(codec, "codec type='\(type)' must be duplex, micro or output")
            }
            guard model.isHDA else { throw reader.error(codec, "a \(model.rawValue) sound device has no HDA codecs") }
            sound.codecs.append(type)
        }
        if let audio = try reader.child(element, "audio") {
            guard try reader.intAttribute(audio, "id") == 1 else { throw reader.unsupported(audio, "an audio backend other than id 1 (vmshim has one backend)") }
        }
        sound.alias = try userAlias(element)
        switch try parseAddress(element) {
        case nil: break
        case .pci(let address)? where model.isPCI: sound.pciAddress = address
        case .usb(let port)? where model == .usb: sound.usbPort = port
        default:
            throw reader.error(
                element.firstElement(named: "address") ?? element,
                model == .sb16 ? "an sb16 sound device is ISA and takes no address" : "a \(model.rawValue) sound device takes a \(model == .usb ? "USB" : "PCI") address")
        }
        return sound
    }

    func parseWatchdog(_ element: XMLElement) throws -> DomainSpec.Watchdog {
        let modelRaw = try reader.requiredAttribute(element, "model")
        guard let model = DomainSpec.Watchdog.Model(rawValue: modelRaw) else {
            throw reader.unsupported(element, "watchdog model '\(modelRaw)' (supported: ib700, i6300esb)")
        }
        let action = reader.attribute(element, "action") ?? "reset"
        switch action {
        case "reset", "shutdown", "poweroff", "pause", "none", "inject-nmi":
            break
        case "dump":
            throw reader.unsupported(element, "watchdog action='dump' (vmshim does not write guest core dumps)")
        default:
            throw reader.error(element, "unknown watchdog action '\(action)' (reset, shutdown, poweroff, pause, none, inject-nmi)")
        }
        var watchdog = DomainSpec.Watchdog(model: model, action: action)
        watchdog.alias = try userAlias(element)
        switch try parseAddress(element) {
        case nil: break
        case .pci(let address)? where model == .i6300esb: watchdog.pciAddress = address
        default: throw reader.error(element, model == .i6300esb ? "an i6300esb watchdog takes a PCI address" : "an ib700 watchdog takes no address")
        }
        return watchdog
    }

    // MARK: - Memory devices

    /// `<memory model='dimm'|'virtio-mem'>` as libvirt 9.0 reads them; the
    /// checks that need `<maxMemory>` and the NUMA cells come after parsing
    /// (`DomainParser.validateMemoryDevices`).
    func parseMemoryDevice(_ element: XMLElement) throws -> DomainSpec.MemoryDevice {
        let modelName = try reader.requiredAttribute(element, "model")
        guard let model = DomainSpec.MemoryDevice.Model(rawValue: modelName) else {
            throw reader.unsupported(element, "memory model='\(modelName)' (dimm and virtio-mem are supported)")
        }
        for attribute in ["access", "discard"] where element.attribute(attribute) != nil {
            throw reader.unsupported(element, "\(attribute)= on a memory device (its backend follows the default)")
        }
        if let source = try reader.child(element, "source") {
            throw reader.unsupported(source, "a memory device <source> (host page size, nodemask or path)")
        }
        guard let target = try reader.child(element, "target") else {
            throw reader.error(element, "a memory device needs <target><size>")
        }
        for name in ["label", "readonly", "address"] {
            if let child = try reader.child(target, name) { throw reader.unsupported(child, "<\(name)> in a memory device's <target>") }
        }
        guard let sizeElement = try reader.child(target, "size") else {
            throw reader.error(target, "a memory device needs <size>")
        }
        let size = try kibibytes(sizeElement)
        guard size > 0 else { throw reader.error(sizeElement, "the size of a memory device must be above zero") }
        guard let nodeText = try reader.childText(target, "node") else {
            throw reader.error(target, "target NUMA node needs to be specified for memory device (<node>)")
        }
        guard let node = Int(nodeText), node >= 0 else {
            throw reader.error(target, "<node>\(nodeText)</node> is not a NUMA cell id")
        }
        var device = DomainSpec.MemoryDevice(model: model, sizeKiB: size, node: node)
        switch model {
        case .dimm:
            for name in ["block", "requested"] {
                if let child = try reader.child(target, name) { throw reader.error(child, "<\(name)> is for virtio-mem, not a DIMM") }
            }
            // libvirt aligns DIMMs to 2 MiB on x86.
            device.sizeKiB = (size + 2047) / 2048 * 2048
            if let address = try reader.child(element, "address") {
                guard try reader.requiredAttribute(address, "type") == "dimm" else {
                    throw reader.error(address, "a DIMM takes an address of type 'dimm'")
                }
                device.slot = try reader.intAttribute(address, "slot", range: 0...255)
                if let base = reader.attribute(address, "base") {
                    guard let value = ElementReader.parseInteger(base), value > 0 else {
                        throw reader.error(address, "base='\(base)' is not an address")
                    }
                    device.base = UInt64(value)
                }
            }
        case .virtioMem:
            guard let blockElement = try reader.child(target, "block") else {
                throw reader.error(target, "a virtio-mem device needs <block>, its block size")
            }
            let block = try kibibytes(blockElement)
            guard block >= 2048, block & (block - 1) == 0 else {
                throw reader.error(blockElement, "the block size must be a power of two of at least 2 MiB")
            }
            device.blockKiB = block
            device.sizeKiB = (size + block - 1) / block * block
            if let requestedElement = try reader.child(target, "requested") {
                let requested = try kibibytes(requestedElement)
                guard requested % block == 0, requested <= device.sizeKiB else {
                    throw reader.error(requestedElement, "requested size must be a multiple of the block size and at most the size")
                }
                device.requestedKiB = requested
            }
            if let current = try reader.child(target, "current") { reader.ignoreSubtree(current) }  // output only
            device.pciAddress = try pciAddress(element)
        }
        device.alias = try userAlias(element)
        return device
    }

    func parsePanic(_ element: XMLElement) throws -> DomainSpec.Panic {
        let model = reader.attribute(element, "model") ?? "isa"
        var panic = DomainSpec.Panic()
        switch model {
        case "isa":
            switch try parseAddress(element) {
            case nil: break
            case .isa(let ioBase)?: panic.ioBase = ioBase
            default: throw reader.error(element, "an isa panic device takes an isa address")
            }
        case "hyperv":
            panic.model = .hyperv
            if try parseAddress(element) != nil {
                throw reader.error(element, "a hyperv panic notifier is not a device and takes no address")
            }
        default:
            throw reader.unsupported(element, "panic model '\(model)' (isa and hyperv are supported)")
        }
        panic.alias = try userAlias(element)
        return panic
    }
}

extension DomainSpec.Memballoon {
    init(model: Model, autodeflate: Bool?, freePageReporting: Bool?) {
        self.init(model: model, autodeflate: autodeflate, freePageReporting: freePageReporting, statsPeriodSeconds: nil)
    }
}

extension DomainSpec.RNG {
    init(backend: Backend) { self.init(backend: backend, rateBytes: nil, ratePeriodMilliseconds: nil) }
}

extension DomainSpec.Controller {
    init(kind: Kind, index: Int, model: String?) {
        self.init(kind: kind, index: index, model: model, ports: nil, chassis: nil, port: nil)
    }
}

extension DomainSpec.CharDevice {
    init(backend: Backend) {
        self.init(backend: backend, targetType: nil, targetPort: nil, targetName: nil, logFile: nil, logAppend: nil)
    }
}

extension DomainParser {
    /// `<backingStore>` nested top-down, as libvirt writes it. No element:
    /// unknown (probed at start); an empty one ends the chain.
    func parseBackingStore(_ disk: XMLElement) throws -> ([DomainSpec.Disk.BackingLayer], Bool) {
        var layers: [DomainSpec.Disk.BackingLayer] = []
        var parent = disk
        while let store = try reader.child(parent, "backingStore") {
            guard let typeRaw = reader.attribute(store, "type") else {
                guard store.children.allSatisfy({ $0.namespaceURI != nil }) else {
                    throw reader.error(store, "a <backingStore> with content needs type='file' or 'block'")
                }
                return (layers, true)  // <backingStore/>: the chain ends here
            }
            guard let type = DomainSpec.Disk.SourceType(rawValue: typeRaw) else {
                throw reader.unsupported(store, "backingStore type='\(typeRaw)' (vmshim supports file and block)")
            }
            reader.ignoreAttributes(store, "index")
            guard let formatElement = try reader.child(store, "format") else {
                throw reader.error(store, "a <backingStore> needs <format type='raw|qcow2'/>")
            }
            let formatRaw = try reader.requiredAttribute(formatElement, "type")
            guard let format = DomainSpec.Disk.Format(rawValue: formatRaw) else {
                throw reader.unsupported(formatElement, "backing format type='\(formatRaw)' (vmshim supports raw and qcow2)")
            }
            guard let sourceElement = try reader.child(store, "source") else {
                throw reader.error(store, "a <backingStore> needs a <source>")
            }
            let attributeName = type == .file ? "file" : "dev"
            let path = try reader.requiredAttribute(sourceElement, attributeName)
            guard path.hasPrefix("/") else {
                throw reader.error(sourceElement, "\(attributeName)='\(path)' must be an absolute path")
            }
            reader.ignoreAttributes(sourceElement, "index")
            layers.append(DomainSpec.Disk.BackingLayer(sourceType: type, path: path, format: format))
            if format == .raw {
                if let below = try reader.child(store, "backingStore"), below.attribute("type") != nil {
                    throw reader.error(below, "a raw image has no backing file")
                }
                return (layers, true)
            }
            parent = store
        }
        return (layers, false)
    }
}

extension DomainSpec.Input {
    init(kind: Kind, bus: Bus) { self.init(kind: kind, bus: bus, alias: "", pciAddress: nil) }
}

/// Devices that remember where they came from in the document.
protocol DocumentPositioned {
    var xmlIndex: Int? { get set }
    var xmlLine: Int? { get set }
}

extension DocumentPositioned {
    func at(_ position: Int, line: Int) -> Self {
        var copy = self
        copy.xmlIndex = position
        copy.xmlLine = line
        return copy
    }
}

extension DomainSpec.Disk: DocumentPositioned {}
extension DomainSpec.MemoryDevice: DocumentPositioned {}
extension DomainSpec.Redirdev: DocumentPositioned {}
extension DomainSpec.Hub: DocumentPositioned {}
extension DomainSpec.Controller: DocumentPositioned {}
extension DomainSpec.Interface: DocumentPositioned {}
extension DomainSpec.CharDevice: DocumentPositioned {}
extension DomainSpec.Input: DocumentPositioned {}
extension DomainSpec.Graphics: DocumentPositioned {}
extension DomainSpec.Video: DocumentPositioned {}
extension DomainSpec.Memballoon: DocumentPositioned {}
extension DomainSpec.RNG: DocumentPositioned {}
extension DomainSpec.Panic: DocumentPositioned {}
extension DomainSpec.Watchdog: DocumentPositioned {}
extension DomainSpec.Sound: DocumentPositioned {}
extension DomainSpec.IOMMU: DocumentPositioned {}
