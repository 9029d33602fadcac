/// The validated model of one libvirt domain, as far as vmshim supports it.
///
/// Produced by `DomainParser` from the XML; everything here has been checked
/// (units resolved, enums known, cross-references valid). `DomainDefaults`
/// then fills in what libvirt would (aliases, MACs, implicit controllers,
/// PCI addresses) before `QEMUCommandLine` turns it into argv.
public struct DomainSpec: Sendable, Equatable {
    public enum VirtType: String, Sendable { case qemu, kvm }

    public var virtType: VirtType
    public var name: String
    public var uuid: DomainUUID
    public var memory: Memory
    public var vcpus: VCPUs
    public var cpu: CPU
    public var os: OS
    public var features: Features
    public var clock: Clock
    public var lifecycle: Lifecycle
    public var power: PowerManagement
    public var emulator: String
    public var devices: Devices
    /// `<resource register='none'/>`: vmshim creates and writes no cgroup and
    /// QEMU stays exactly in the caller's (vmshim's extension of `<resource>`).
    public var registerCgroup: Bool = true
    /// `<memtune>`, `<cputune>`, `<blkiotune>`: limits for the VM's cgroup.
    public var tuning = Tuning()
    /// `<memoryBacking>`: how the guest's RAM is allocated on the host.
    public var memoryBacking = MemoryBacking()

    public struct MemoryBacking: Sendable, Equatable {
        /// `<source type='memfd'/>`: a memfd backend (what vhost-user and virtiofs need).
        public var memfd = false
        /// `<access mode>`: true shared, false private, nil not given. Given
        /// on anonymous memory, libvirt backs RAM with a file (in vmshim, in
        /// the run directory's `ram/`) so the mapping mode can be chosen.
        public var sharedAccess: Bool?
        public var shared: Bool { sharedAccess == true }
        /// `<allocation mode='immediate'/>`: allocate all RAM at start.
        public var preallocate = false
        /// `<nosharepages/>`: keep the RAM out of KSM.
        public var noSharePages = false
        /// `<hugepages>`: guest RAM on huge pages, preallocated.
        public var hugepages = false
        /// The page size: `<page size>`, else the host's default (filled in
        /// by DomainDefaults).
        public var hugepageSizeKiB: UInt64?
        /// Where QEMU maps the RAM from (a directory on the hugetlbfs mount of
        /// that size); nil with memfd, which asks the kernel for huge pages.
        public var hugepageDirectory: String?
        public init() {}
    }
    /// `<iothreads>` / `<iothreadids>`: the ids of QEMU's iothread objects (`iothreadN`).
    public var iothreadIDs: [Int] = []
    /// `<cputune>` `<vcpupin>`, `<emulatorpin>`, `<iothreadpin>`.
    public var pinning = CPUPinning()
    /// `<numatune>`: which host NUMA nodes guest RAM comes from.
    public var numaTune = NUMATune()

    /// Host NUMA binding of guest RAM: `<memory>` for all of it, `<memnode>`
    /// per guest cell (a cell without one follows `<memory>`), as libvirt
    /// resolves it.
    public struct NUMATune: Sendable, Equatable {
        public enum Mode: String, Sendable { case strict, preferred, interleave, restrictive }
        public struct Binding: Sendable, Equatable {
            public var mode: Mode
            public var hostNodes: [Int]
        }
        public var memory: Binding? = nil
        public var cells: [Int: Binding] = [:]
        public var isEmpty: Bool { memory == nil && cells.isEmpty }
        /// The binding of a guest cell's RAM (nil: the machine's RAM without cells).
        public func binding(cell: Int?) -> Binding? { cell.flatMap { cells[$0] } ?? memory }
    }

    /// Host CPUs for QEMU's threads, as libvirt pins them: a vCPU or
    /// iothread without its own pin, and the emulator without
    /// `<emulatorpin>`, get `<vcpu cpuset>` (or any CPU).
    public struct CPUPinning: Sendable, Equatable {
        /// vCPU id → host CPUs.
        public var vcpus: [Int: [Int]] = [:]
        public var emulator: [Int]? = nil
        /// iothread id → host CPUs.
        public var iothreads: [Int: [Int]] = [:]
        public var isEmpty: Bool { vcpus.isEmpty && emulator == nil && iothreads.isEmpty }
    }
    /// `<sysinfo type='smbios'>` when `<os><smbios mode='sysinfo'/>` selects
    /// it: QEMU's `-smbios` tables. nil leaves QEMU's own.
    public var sysinfo: Sysinfo? = nil
    /// `<sysinfo type='fwcfg'>`: QEMU's `-fw_cfg` entries, in document order.
    public var firmwareConfig: [FirmwareConfigEntry] = []

    public struct FirmwareConfigEntry: Sendable, Equatable {
        public enum Content: Sendable, Equatable {
            case string(String)
            /// QEMU reads the file when it starts.
            case file(String)
        }
        public var name: String
        public var content: Content
    }
}

// MARK: - Identity

/// A domain UUID, parsed like libvirt's virUUIDParse (hex digits, dashes allowed
/// between bytes) and always printed in canonical 8-4-4-4-12 lowercase form.
public struct DomainUUID: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(_ text: String) {
        var digits: [UInt8] = []
        for ch in text.trimmingWhitespace().utf8 {
            if ch == UInt8(ascii: "-") { continue }
            guard let value = DomainUUID.hexValue(ch) else { return nil }
            digits.append(value)
        }
        guard digits.count == 32 else { return nil }
        bytes = stride(from: 0, to: 32, by: 2).map { digits[$0] << 4 | digits[$0 + 1] }
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// A random version-4 UUID, as libvirt generates for a domain without one.
    public static func random() -> DomainUUID {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return DomainUUID(bytes: bytes)
    }

    public var description: String {
        let hex = bytes.map { byte -> String in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]]
            .map { $0.joined() }.joined(separator: "-")
    }

    private static func hexValue(_ ch: UInt8) -> UInt8? {
        switch ch {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return ch - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return ch - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return ch - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

// MARK: - Memory and CPUs

extension DomainSpec {
    public struct Memory: Sendable, Equatable {
        /// `<memory>`: the boot-time maximum, in KiB.
        public var maximumKiB: UInt64
        /// `<currentMemory>`: the balloon target after start, in KiB.
        public var currentKiB: UInt64
        /// `<maxMemory slots>`: memory hotplug (`-m size=…,slots=…,maxmem=…`).
        public var hotplug: Hotplug? = nil
        /// What the memory devices (DIMMs, virtio-mem) add, aligned as libvirt aligns them.
        public var devicesKiB: UInt64 = 0

        /// libvirt's `<memory>` with memory devices: boot memory plus the devices.
        public var totalKiB: UInt64 { maximumKiB + devicesKiB }

        public struct Hotplug: Sendable, Equatable {
            public var maximumKiB: UInt64
            public var slots: Int
        }
    }

    public struct VCPUs: Sendable, Equatable {
        /// `<vcpu>`: the maximum number of vCPUs.
        public var maximum: Int
        /// `<vcpu current=…>`: how many are online at boot.
        public var current: Int
        /// `<vcpu cpuset=…>` as written (kept for the live XML).
        public var cpuset: String?
        /// The host CPUs it names, ascending: QEMU's affinity, as libvirt pins
        /// the emulator and its vCPUs with `placement='static'`.
        public var cpusetCPUs: [Int]? = nil
    }

    public struct CPU: Sendable, Equatable {
        public enum Mode: String, Sendable {
            case custom
            case hostModel = "host-model"
            case hostPassthrough = "host-passthrough"
            case maximum
        }
        public enum FeaturePolicy: String, Sendable { case force, require, optional, disable, forbid }
        public struct Feature: Sendable, Equatable {
            public var name: String
            public var policy: FeaturePolicy
        }
        public struct Topology: Sendable, Equatable {
            public var sockets: Int
            public var dies: Int
            public var cores: Int
            public var threads: Int
            public var total: Int { sockets * dies * cores * threads }
        }
        public var mode: Mode
        public var model: String?
        /// `<vendor>`: libvirt's vendor name; a check for libvirt, nothing on `-cpu`.
        public var vendor: String? = nil
        public var features: [Feature]
        public var topology: Topology?
        /// `<numa><cell>`: the guest's NUMA nodes, in id order.
        public var numaCells: [NUMACell] = []

        public struct NUMACell: Sendable, Equatable {
            public var id: Int
            public var cpus: [Int]
            public var memoryKiB: UInt64
            /// `<distances><sibling id value>`, by sibling id.
            public var distances: [Int: Int] = [:]
            /// `memAccess`: true shared, false private, nil the domain's `<access>`.
            public var memAccessShared: Bool?
        }
    }
}

// MARK: - OS, features, clock, lifecycle

extension DomainSpec {
    public enum BootDevice: String, Sendable { case hd, cdrom, network, fd }

    public struct OS: Sendable, Equatable {
        public var arch: String
        public var machine: String
        public var bootDevices: [BootDevice]
        public var bootMenu: Bool?
        public var bootMenuTimeoutMilliseconds: Int?
        public var kernel: String?
        public var initrd: String?
        public var cmdline: String?
        /// UEFI: `<os firmware='efi'>`, `<loader>`, `<nvram>`; nil boots SeaBIOS.
        public var firmware: Firmware? = nil
    }

    /// The pflash firmware and its variable store, as libvirt fills them in.
    public struct Firmware: Sendable, Equatable {
        /// `<os firmware='efi'>`: pick from QEMU's firmware descriptors.
        public var autoselect: Bool
        /// `<firmware><feature name enabled>`: secure-boot, enrolled-keys.
        public var wantedFeatures: [String: Bool] = [:]
        /// `<loader>`: the read-only code (pflash0).
        public var loader: String?
        public var secure: Bool?
        /// `<nvram template>` and its path (pflash1), filled in before start.
        public var nvramTemplate: String?
        public var nvram: String?
        /// Lines of `<loader>` and `<os>`, for errors found after parsing.
        public var xmlLine: Int?
        public init(autoselect: Bool) { self.autoselect = autoselect }
    }

    public struct Features: Sendable, Equatable {
        public var acpi: Bool
        public var apic: Bool
        public var pae: Bool
        /// `<vmport state>`, `<smm state>`, `<pmu state>`: nil leaves QEMU's default.
        public var vmport: Bool? = nil
        public var smm: Bool? = nil
        public var pmu: Bool? = nil
        /// `<hyperv>`: Hyper-V enlightenments, written on `-cpu` as libvirt does.
        public var hyperv: HyperV? = nil
        /// `<kvm>`: hidden (`kvm=off`), poll-control, pv-ipi, on `-cpu`.
        public var kvm: KVM? = nil
        /// `<ioapic driver>`: `kvm` → `kernel_irqchip=on`, `qemu` → `kernel_irqchip=split`.
        public var ioapicDriver: String? = nil
    }

    public struct KVM: Sendable, Equatable {
        public var hidden = false
        public var pollControl = false
        /// `<pv-ipi state='off'>` (`kvm-pv-ipi=off`); on is QEMU's default.
        public var pvIPIOff = false
    }

    /// `<features><hyperv>`. Only enlightenments with state='on' reach QEMU,
    /// in libvirt's order (`HyperV.Enlightenment.allCases`).
    public struct HyperV: Sendable, Equatable {
        public enum Enlightenment: String, Sendable, CaseIterable {
            case relaxed, vapic, spinlocks, vpindex, runtime, synic, stimer, reset
            case vendorID = "vendor_id"
            case frequencies, reenlightenment, tlbflush, ipi, evmcs, avic
        }
        /// mode='passthrough': every enlightenment the host offers (`hv-passthrough`).
        public var passthrough = false
        public var enabled: Set<Enlightenment> = []
        /// spinlocks retries (at least 4095, as libvirt requires).
        public var spinlockRetries: UInt32 = 0
        public var vendorID = ""
        /// `<stimer><direct state='on'/>`.
        public var stimerDirect = false
    }

    public struct Clock: Sendable, Equatable {
        public enum Offset: Sendable, Equatable {
            case utc
            case localtime
            /// `offset='variable'`: seconds relative to UTC (basis utc) or local time.
            case variable(adjustmentSeconds: Int64, basisLocaltime: Bool)
        }
        public enum TickPolicy: String, Sendable { case delay, catchup, merge, discard }
        public struct Timer: Sendable, Equatable {
            public enum Name: String, Sendable { case rtc, pit, hpet, kvmclock, tsc, hypervclock, platform, armvtimer }
            public var name: Name
            public var present: Bool?
            public var tickPolicy: TickPolicy?
            /// rtc only: `track='guest'|'wall'|'realtime'`.
            public var track: String?
        }
        public var offset: Offset
        public var timers: [Timer]

        public func timer(_ name: Timer.Name) -> Timer? { timers.first { $0.name == name } }
    }

    public enum LifecycleAction: String, Sendable {
        case destroy
        case restart
        case preserve
        case renameRestart = "rename-restart"
        case coredumpDestroy = "coredump-destroy"
        case coredumpRestart = "coredump-restart"
    }

    public struct Lifecycle: Sendable, Equatable {
        public var onPoweroff: LifecycleAction
        public var onReboot: LifecycleAction
        public var onCrash: LifecycleAction
    }

    public struct PowerManagement: Sendable, Equatable {
        /// nil: not specified, QEMU's default applies.
        public var suspendToMem: Bool?
        public var suspendToDisk: Bool?
    }
}

// MARK: - Devices

/// A guest PCI address: `<address type='pci' domain bus slot function multifunction/>`.
public struct PCIAddress: Sendable, Hashable, CustomStringConvertible {
    public var domain: Int = 0
    public var bus: Int
    public var slot: Int
    public var function: Int = 0
    public var multifunction: Bool = false

    public init(bus: Int, slot: Int, function: Int = 0, multifunction: Bool = false) {
        self.bus = bus
        self.slot = slot
        self.function = function
        self.multifunction = multifunction
    }

    public var description: String {
        func hex(_ v: Int, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(hex(domain, 4)):\(hex(bus, 2)):\(hex(slot, 2)).\(function)"
    }
}

/// `<address type='drive' controller bus target unit/>` for IDE, SATA and SCSI disks.
public struct DriveAddress: Sendable, Hashable {
    public var controller: Int
    public var bus: Int
    public var target: Int = 0
    public var unit: Int
}

extension DomainSpec {
    public struct Devices: Sendable, Equatable {
        public var disks: [Disk] = []
        public var controllers: [Controller] = []
        public var interfaces: [Interface] = []
        public var serials: [CharDevice] = []
        public var consoles: [CharDevice] = []
        /// `<parallel>`: LPT1 to LPT3 (`isa-parallel`).
        public var parallels: [CharDevice] = []
        public var channels: [CharDevice] = []
        public var inputs: [Input] = []
        public var graphics: [Graphics] = []
        public var videos: [Video] = []
        public var memballoon: Memballoon?
        public var rngs: [RNG] = []
        public var panics: [Panic] = []
        /// libvirt 9.0 allows one.
        public var watchdog: Watchdog?
        public var sounds: [Sound] = []
        /// `<iommu model='intel'>` (q35).
        public var iommu: IOMMU?
        /// `<memory model='dimm'|'virtio-mem'>`: hot-pluggable memory.
        public var memoryDevices: [MemoryDevice] = []
        /// `<redirdev bus='usb' type='spicevmc'>`: USB redirection over SPICE.
        public var redirdevs: [Redirdev] = []
        /// `<hub type='usb'>`s, the XML's then the ones vmshim adds.
        public var hubs: [Hub] = []
        /// `<audio type>`: none, or spice (the default with SPICE graphics, as in libvirt).
        public var audio: Audio?
        public var audioLine: Int?

        public enum Audio: String, Sendable { case none, spice }

        /// The audio backend QEMU gets: the declared one, else spice when a
        /// SPICE display carries the sound, else none.
        public var audioBackend: Audio {
            audio ?? (graphics.contains { $0.kind == .spice } ? .spice : .none)
        }
    }

    /// `<hub type='usb'>`: a usb-hub with 8 ports. libvirt adds them (implicit)
    /// when the USB devices outnumber the controller's ports.
    public struct Hub: Sendable, Equatable {
        public var usbPort: String?
        public var alias: String = ""
        public var implicit = false
        public var xmlIndex: Int?
        public var xmlLine: Int?
    }

    public struct Redirdev: Sendable, Equatable {
        public var usbPort: String?
        public var alias: String = ""
        public var xmlIndex: Int?
        public var xmlLine: Int?
    }

    /// A `<memory>` device: a pc-dimm in a memory slot, or a virtio-mem PCI
    /// device whose plugged size the guest driver grows to `requested`.
    public struct MemoryDevice: Sendable, Equatable {
        public enum Model: String, Sendable {
            case dimm
            case virtioMem = "virtio-mem"
        }
        public var model: Model
        /// `<target><size>`, aligned (2 MiB for DIMMs, the block size for virtio-mem).
        public var sizeKiB: UInt64
        /// `<target><node>`: the guest NUMA node.
        public var node: Int
        /// dimm: `<address type='dimm' slot base>`; the slot is assigned when absent.
        public var slot: Int?
        public var base: UInt64?
        /// virtio-mem: `<block>` and `<requested>`.
        public var blockKiB: UInt64 = 0
        public var requestedKiB: UInt64 = 0
        public var pciAddress: PCIAddress?
        public var alias: String = ""
        public var xmlIndex: Int?
        public var xmlLine: Int?
    }

    public struct Disk: Sendable, Equatable {
        public enum SourceType: String, Sendable { case file, block }
        public enum Device: String, Sendable { case disk, cdrom, floppy }
        /// `<geometry cyls heads secs trans>`: the BIOS CHS geometry.
        public struct Geometry: Sendable, Equatable {
            public var cylinders: Int
            public var heads: Int
            public var sectors: Int
            /// ide only: none, lba or auto (`bios-chs-trans`).
            public var translation: String?
        }
        public var geometry: Geometry?
        public enum Bus: String, Sendable { case virtio, sata, ide, scsi, usb, fdc }
        public enum Format: String, Sendable { case raw, qcow2 }
        public enum Cache: String, Sendable {
            case `default`, none, writethrough, writeback, directsync, unsafe
        }
        public enum IO: String, Sendable { case native, threads, ioUring = "io_uring" }
        public enum Discard: String, Sendable { case unmap, ignore }
        /// What to do when the source (or a file of its backing chain) is
        /// missing at start: libvirt's `<source startupPolicy>`; nil is mandatory.
        public enum StartupPolicy: String, Sendable { case mandatory, requisite, optional }

        /// One image under the disk's source, top-down.
        public struct BackingLayer: Sendable, Equatable {
            public var sourceType: SourceType
            public var path: String
            public var format: Format
            /// libvirt's node number (libvirt-N-storage/-format), set at start.
            public var nodeIndex: Int?
            public init(sourceType: SourceType, path: String, format: Format) {
                self.sourceType = sourceType
                self.path = path
                self.format = format
            }
        }

        public var sourceType: SourceType
        public var device: Device
        /// nil for an empty cdrom tray.
        public var source: String?
        public var format: Format
        public var cache: Cache?
        public var io: IO?
        public var discard: Discard?
        public var readOnly: Bool
        public var shareable: Bool
        public var serial: String?
        public var targetDev: String
        public var bus: Bus
        public var bootOrder: Int?
        public var startupPolicy: StartupPolicy?
        /// The images under the source, top-down: declared with `<backingStore>`
        /// or probed from the image headers at start.
        public var backingChain: [BackingLayer] = []
        /// True when the chain is known to end (a terminating `<backingStore/>`,
        /// a raw layer, or probed): false means probe on from the last layer.
        public var backingChainComplete: Bool = false
        /// libvirt's node number of the top image, set at start (DiskStorage).
        public var nodeIndex: Int?
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
        public var driveAddress: DriveAddress?
        /// usb: `<address type='usb' port>` (nil: the first free port).
        public var usbPort: String?
        /// `model='virtio-non-transitional'`: the modern-only virtio device.
        public var nonTransitional = false
        /// `<wwn>` (ide, scsi), `<vendor>`/`<product>` (scsi), `<blockio>`: what
        /// the guest reads from the disk's identity and geometry.
        public var wwn: UInt64?
        public var vendor: String?
        public var product: String?
        public var logicalBlockSize: Int?
        public var physicalBlockSize: Int?
        /// `<iotune>`: QEMU's throttle limits by QMP argument name (bps, iops_rd,
        /// bps_max_length, iops_size, …), set with block_set_io_throttle before
        /// the guest runs, and the throttle group.
        public var ioTune: [String: Int64] = [:]
        public var ioTuneGroup: String?
        /// `<driver error_policy rerror_policy>` as QEMU's werror/rerror.
        public var writeErrorPolicy: String?
        public var readErrorPolicy: String?
        /// virtio: `<driver iothread queues>`.
        public var iothread: Int?
        public var queues: Int?
        /// virtio: `<driver ioeventfd event_idx>`, QEMU's virtqueue notification knobs.
        public var ioeventfd: Bool? = nil
        public var eventIdx: Bool? = nil
        /// usb and scsi: `<target removable>`.
        public var removable: Bool?
    }

    public struct Controller: Sendable, Equatable {
        public enum Kind: String, Sendable {
            case pci, usb, ide, sata, fdc, scsi
            case virtioSerial = "virtio-serial"
        }
        public var kind: Kind
        public var index: Int
        /// libvirt's model name: pci-root, pcie-root, pcie-root-port, pci-bridge,
        /// piix3-uhci, qemu-xhci, nec-xhci, none.
        public var model: String?
        /// usb: number of ports (qemu-xhci p2/p3); virtio-serial: ports.
        public var ports: Int?
        /// USB companions (ich9-uhci1–3): `<master startport>`; they share
        /// the index, alias and ports of their ich9-ehci1 master.
        public var usbMasterStartPort: Int?
        /// virtio-scsi: `<driver queues cmd_per_lun max_sectors ioeventfd>`.
        public var scsiQueues: Int?
        public var scsiCmdPerLun: Int?
        public var scsiMaxSectors: Int?
        public var scsiIOEventFD: Bool?
        public var scsiIOThread: Int?
        /// `<model name>`: the QEMU device when not the default (ioh3420 for a pcie-root-port).
        public var deviceName: String?
        /// pcie-root-port: chassis and port numbers; pci-bridge: chassisNr.
        public var chassis: Int?
        public var port: Int?
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
        /// True when vmshim added it (as libvirt would), not the user.
        public var implicit = false
    }

    public struct Interface: Sendable, Equatable {
        public enum Kind: String, Sendable {
            case user, ethernet, bridge, network, direct, mcast, server, client, udp
            /// Backed by a tap device the shim opens.
            public var usesTap: Bool { self == .ethernet || self == .bridge || self == .network }
        }
        public enum Model: String, Sendable { case virtio, e1000, e1000e, rtl8139 }
        public var kind: Kind
        public var mac: String
        public var macGenerated: Bool
        public var model: Model
        /// ethernet: the tap device name (`<target dev=…>`); nil lets the shim pick vnetN.
        public var targetDev: String?
        /// ethernet: `managed='no'` opens an existing tap instead of creating one.
        public var managedTap: Bool
        public var mtu: Int?
        public var linkUp: Bool
        public var bootOrder: Int?
        /// `<model type='virtio-non-transitional'>`: the modern-only virtio device.
        public var nonTransitional = false
        /// `<rom enabled bar file>`: nil leaves QEMU's default ROM.
        public var romEnabled: Bool? = nil
        public var romBar: Bool? = nil
        public var romFile: String? = nil
        /// bridge: `<source bridge>`, the host bridge the tap joins; network:
        /// the bridge of the port libvirt's network service gave (filled at start).
        public var bridge: String?
        /// network: `<source network>`, a libvirt virtual network.
        public var network: String? = nil
        /// network: the libvirt network port vmshim holds (`<source portid>`).
        public var networkPortID: String? = nil
        /// ethernet, bridge, network: `<tune><sndbuf>`, the tap's send buffer in bytes.
        public var sendBuffer: Int? = nil
        /// direct: `<source dev mode>`, the host device the macvtap link sits on
        /// and its macvlan mode (vepa, bridge, private, passthrough).
        public var directDevice: String? = nil
        public var directMode: String = "vepa"
        /// mcast/server/client/udp: QEMU's socket netdev endpoint
        /// (`<source address port>`) and, for udp, `<local address port>`.
        public var socketEndpoint: String?
        public var socketLocal: String?
        /// virtio only: `<driver txmode ioeventfd event_idx rx_queue_size tx_queue_size>`.
        public var virtioTuning = VirtioNetTuning()
        /// ethernet: `<script path>`, run with the tap's name before the guest's vCPUs first run.
        public var script: String? = nil
        /// type='user': `<ip family='ipv4' address prefix>` → the slirp network
        /// (`net`), `<ip family='ipv6' address prefix>` → `ipv6-prefix`/`ipv6-prefixlen`.
        public var userNetwork: String? = nil
        public var userIPv6Prefix: String? = nil
        public var userIPv6PrefixLength: Int? = nil
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
    }

    public struct VirtioNetTuning: Sendable, Equatable {
        /// QEMU's `tx`: `bh` (libvirt txmode='iothread') or `timer`.
        public var tx: String?
        public var ioeventfd: Bool?
        public var eventIdx: Bool?
        public var rxQueueSize: Int?
        public var txQueueSize: Int?
        /// `queues`: a multiqueue tap with this many queue pairs (`mq=on`).
        public var queues: Int?
        public init() {}
    }

    public struct CharDevice: Sendable, Equatable {
        public enum Backend: Sendable, Equatable {
            case pty
            case null
            case file(path: String, append: Bool?)
            case unixListen(path: String)
            case unixConnect(path: String, reconnectSeconds: Int?)
            /// `type='tcp'`: listening (mode='bind') or connecting, raw or telnet.
            case tcp(host: String, port: Int, listen: Bool, telnet: Bool, reconnectSeconds: Int?)
            /// `type='udp'`: sends to host:port, from localHost:localPort when bound.
            case udp(host: String, port: Int, localHost: String?, localPort: Int?)
            /// `type='spicevmc'`: a SPICE channel (the vdagent on a virtio channel).
            case spicevmc
        }
        public enum TargetType: String, Sendable {
            case isaSerial = "isa-serial"
            case serial
            case virtio
        }
        public var backend: Backend
        public var targetType: TargetType?
        public var targetPort: Int?
        /// channel: `<target type='virtio' name=…/>`.
        public var targetName: String?
        /// Log file for everything the guest writes (`<log file=… append=…/>`).
        public var logFile: String?
        public var logAppend: Bool?
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
    }

    public struct Input: Sendable, Equatable {
        public enum Kind: String, Sendable { case mouse, keyboard, tablet }
        public enum Bus: String, Sendable { case ps2, usb, virtio }
        public var kind: Kind
        public var bus: Bus
        public var implicit = false
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
        /// An explicit `<address type='usb' port=…>` ("1", or "1.2" behind a hub).
        public var usbPort: String?
    }

    public struct Graphics: Sendable, Equatable {
        public enum Kind: String, Sendable { case vnc, spice }
        public enum Listen: Sendable, Equatable {
            case address(String)
            case socket(String)
            case none
        }
        /// nil with autoport: the shim picks a free port from 5900.
        public var port: Int?
        public var autoport: Bool
        public var listen: Listen
        public var passwordSet: Bool
        public var kind: Kind = .vnc
        /// SPICE's settings (the QEMU layer spells them as `-spice` options).
        public var spice = Spice()

        /// `<graphics type='spice'>` children; nil leaves QEMU's default.
        public struct Spice: Sendable, Equatable {
            /// `<mouse mode>`: true for client (the agent's), false for server.
            public var agentMouse: Bool?
            public var imageCompression: String?
            public var jpegCompression: String?
            public var zlibCompression: String?
            public var playbackCompression: String?
            public var streamingMode: String?
            /// `<clipboard copypaste>` and `<filetransfer enable>`.
            public var copyPaste: Bool?
            public var fileTransfer: Bool?
            public init() {}
        }
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        /// With autoport, the port a live definition records: the one the
        /// running QEMU already listens on (used only when reattaching).
        public var recordedPort: Int?
    }

    public struct Video: Sendable, Equatable {
        public enum Model: String, Sendable { case vga, cirrus, virtio, bochs, qxl, none }
        public var model: Model
        public var vramKiB: Int?
        /// qxl only: `ram`, `vgamem` and `vram64` in KiB.
        public var ramKiB: Int?
        public var vgamemKiB: Int?
        public var vram64KiB: Int?
        public var heads: Int?
        public var primary: Bool
        public var implicit = false
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
    }

    public struct Memballoon: Sendable, Equatable {
        public enum Model: String, Sendable { case virtio, none }
        public var model: Model
        public var autodeflate: Bool?
        public var freePageReporting: Bool?
        public var statsPeriodSeconds: Int?
        public var nonTransitional = false
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
    }

    public struct RNG: Sendable, Equatable {
        public enum Backend: Sendable, Equatable {
            case random(path: String)
            case builtin
        }
        public var backend: Backend
        public var nonTransitional = false
        public var rateBytes: Int?
        public var ratePeriodMilliseconds: Int?
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
    }

    public struct Watchdog: Sendable, Equatable {
        /// ib700 (ISA) or i6300esb (PCI).
        public enum Model: String, Sendable { case ib700, i6300esb }
        public var model: Model
        /// QEMU's -watchdog-action: reset, shutdown, poweroff, pause, none, inject-nmi.
        public var action: String
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
    }

    public struct IOMMU: Sendable, Equatable {
        /// intel: `intel-iommu` (no PCI address); virtio: `virtio-iommu`, a
        /// PCI device integrated on pcie.0.
        public enum Model: String, Sendable { case intel, virtio }
        public var model: Model = .intel
        public var pciAddress: PCIAddress?
        /// `<driver intremap eim caching_mode iotlb aw_bits>` (intel).
        public var interruptRemapping: Bool? = nil
        public var extendedInterruptMode: Bool? = nil
        public var cachingMode: Bool?
        public var deviceIOTLB: Bool?
        public var addressWidthBits: Int?
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
    }

    public struct Sound: Sendable, Equatable {
        /// ich9 (`ich9-intel-hda`), ich6 (`intel-hda`), ac97 (`AC97`),
        /// es1370 (`ES1370`), sb16 (ISA) or usb (`usb-audio`).
        public enum Model: String, Sendable {
            case ich9, ich6, ac97, es1370, sb16, usb
            /// An Intel HDA controller, with codecs.
            public var isHDA: Bool { self == .ich9 || self == .ich6 }
            /// On a PCI bus (sb16 is ISA, usb on a USB port).
            public var isPCI: Bool { self != .sb16 && self != .usb }
        }
        public var model: Model
        /// usb: `<address type='usb' port>`; nil takes the first free port.
        public var usbPort: String? = nil
        /// HDA codecs: duplex (default), micro, output.
        public var codecs: [String] = []
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
        public var pciAddress: PCIAddress?
    }

    public struct Panic: Sendable, Equatable {
        /// isa: the pvpanic device; hyperv: the Hyper-V crash MSRs (`hv-crash` on `-cpu`), no device.
        public enum Model: String, Sendable { case isa, hyperv }
        public var model: Model = .isa
        public var ioBase: Int?
        public var alias: String = ""
        /// Position among the document's elements of the same name (nil: added by vmshim).
        public var xmlIndex: Int?
        /// Line of the element in the source XML, for errors found after parsing.
        public var xmlLine: Int?
    }
}

// MARK: - SMBIOS

extension DomainSpec {
    /// The SMBIOS tables of a `<sysinfo type='smbios'>`. Values are kept as
    /// written (libvirt does not trim them); nil is an absent or empty entry,
    /// and a table with no value at all is nil.
    public struct Sysinfo: Sendable, Equatable {
        /// Type 0.
        public struct BIOS: Sendable, Equatable {
            public var vendor, version, date, release: String?
        }
        /// Type 1. `uuid`, when given, is the domain's.
        public struct System: Sendable, Equatable {
            public var manufacturer, product, version, serial: String?
            public var uuid: DomainUUID?
            public var sku, family: String?
        }
        /// Type 2.
        public struct BaseBoard: Sendable, Equatable {
            public var manufacturer, product, version, serial, asset, location: String?
        }
        /// Type 3.
        public struct Chassis: Sendable, Equatable {
            public var manufacturer, version, serial, asset, sku: String?
        }
        public var bios: BIOS?
        public var system: System?
        public var baseBoard: BaseBoard?
        public var chassis: Chassis?
        /// Type 11: one string per `<oemStrings><entry>`, empty ones included.
        public var oemStrings: [String] = []
    }
}

// MARK: - Resource tuning

extension DomainSpec {
    /// `<memtune>`, `<cputune>` (shares, period, quota) and `<blkiotune>`
    /// (weight): limits written to the VM's cgroup (Host/Cgroups).
    public struct Tuning: Sendable, Equatable {
        /// libvirt's "unlimited" (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, in KiB).
        public static let unlimitedKiB: UInt64 = 9_007_199_254_740_991

        public var memoryHardLimitKiB: UInt64?
        public var memorySoftLimitKiB: UInt64?
        public var swapHardLimitKiB: UInt64?
        public var cpuShares: UInt64?
        public var cpuPeriodMicros: UInt64?
        /// Per vCPU, as libvirt defines it; negative means unlimited.
        public var cpuQuotaMicros: Int64?
        public var blkioWeight: UInt32?

        public init() {}

        public var hasMemoryLimits: Bool { memoryHardLimitKiB != nil || memorySoftLimitKiB != nil || swapHardLimitKiB != nil }
        public var hasCPULimits: Bool { cpuShares != nil || cpuPeriodMicros != nil || cpuQuotaMicros != nil }
        public var isEmpty: Bool { !hasMemoryLimits && !hasCPULimits && blkioWeight == nil }
    }
}

extension DomainSpec {
    /// Some RAM backend is a plain file that QEMU creates in the run
    /// directory's `ram/` (shared or private access on anonymous memory).
    public var needsMemoryBackingDirectory: Bool {
        guard !memoryBacking.hugepages, !memoryBacking.memfd else { return false }
        return memoryBacking.sharedAccess != nil || cpu.numaCells.contains { $0.memAccessShared != nil }
    }
}
