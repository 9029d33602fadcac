#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a qcow2 image says about its backing file (QEMU's docs/interop/qcow2.txt).
public struct QCOW2Header: Sendable, Equatable {
    public var version: UInt32
    /// As written in the image: absolute, or relative to the image's directory.
    public var backingFile: String?
    /// From the backing-format header extension; nil when the image does not record it.
    public var backingFormat: String?

    static let magic: UInt32 = 0x5146_49FB  // "QFI\xfb"
    static let backingFormatExtension: UInt32 = 0xE279_2ACA

    /// A qcow2 header QEMU would refuse or that names its backing file in a
    /// way vmshim cannot pass on faithfully.
    public struct Malformed: Error, Sendable, Equatable {
        public var reason: String
    }

    /// nil when `bytes` is not a qcow2 image. `readAt` supplies bytes beyond
    /// the prefix when the backing name lies further out.
    public static func parse(_ bytes: [UInt8], readAt: (_ offset: Int, _ length: Int) throws -> [UInt8]) throws -> QCOW2Header? {
        func u32(_ at: Int) -> UInt32? {
            guard at >= 0, at + 4 <= bytes.count else { return nil }
            return bytes[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) }
        }
        func u64(_ at: Int) -> UInt64? {
            guard at >= 0, at + 8 <= bytes.count else { return nil }
            return bytes[at..<at + 8].reduce(0) { $0 << 8 | UInt64($1) }
        }
        guard u32(0) == magic, let version = u32(4), version == 2 || version == 3,
            let backingOffset = u64(8), let backingSize = u32(16), let clusterBits = u32(20)
        else { return nil }
        // QEMU's own limits: clusters of 512 B to 2 MiB, a v3 header of at least 104 bytes.
        guard (9...21).contains(clusterBits) else { throw Malformed(reason: "cluster_bits \(clusterBits) is out of range") }
        let headerLength = version == 3 ? Int(u32(100) ?? 0) : 72
        guard version == 2 || headerLength >= 104 else { throw Malformed(reason: "header_length \(headerLength) is below 104") }
        var header = QCOW2Header(version: version, backingFile: nil, backingFormat: nil)
        if backingOffset > 0, backingSize > 0 {
            // QEMU caps the name at 1023 bytes and stops it at a NUL.
            guard backingSize <= 1023, backingOffset < 1 << 40 else {
                throw Malformed(reason: "the backing file name (\(backingSize) bytes at \(backingOffset)) is out of range")
            }
            let start = Int(backingOffset), length = Int(backingSize)
            var name = start + length <= bytes.count ? Array(bytes[start..<start + length]) : try readAt(start, length)
            if let nul = name.firstIndex(of: 0) { name = Array(name[..<nul]) }
            header.backingFile = try text(name, what: "backing file name")
        }
        // Header extensions sit between the header and the end of the first
        // cluster (or the backing name, when that comes first), as QEMU reads them.
        var end = min(1 << Int(clusterBits), bytes.count)
        if backingOffset > 0, backingOffset < UInt64(end) { end = Int(backingOffset) }
        var at = headerLength
        while at + 8 <= end, let type = u32(at), let length = u32(at + 4), type != 0 {
            let data = at + 8
            guard Int(length) <= end - data else { break }
            if type == backingFormatExtension {
                header.backingFormat = try text(Array(bytes[data..<data + Int(length)]), what: "backing format name")
            }
            at = data + (Int(length) + 7) / 8 * 8
        }
        return header
    }

    /// UTF-8 without control characters: it goes into JSON for QEMU and into the live XML.
    static func text(_ bytes: [UInt8], what: String) throws -> String {
        guard let value = String(validating: bytes, as: UTF8.self),
            !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { throw Malformed(reason: "the \(what) is not UTF-8 text without control characters") }
        return value
    }
}

/// Checks every disk's image and backing chain before QEMU starts, applying
/// libvirt's `startupPolicy` to what is missing (cold boot), with libvirt's
/// error texts. Runs after `DomainDefaults`, so dropping a disk never moves
/// another one's address.
public struct DiskStorage: Sendable {
    /// A disk that `startupPolicy='optional'` left out: a cdrom loses its
    /// medium (`missing-on-start`), a hard disk the whole device (`drop-missing-on-start`).
    public struct Drop: Sendable, Equatable {
        public var targetDev: String
        public var alias: String
        public var source: String
        public var reason: String
        public var why: String
    }

    /// The host calls, so tests can stand in for the file system.
    public struct Files: Sendable {
        /// 0 when the path can be opened for reading, else the errno.
        public var accessError: @Sendable (String) -> Int32
        /// `length` bytes from `offset` (fewer at the end of the file).
        public var read: @Sendable (_ path: String, _ offset: Int, _ length: Int) throws -> [UInt8]
        /// The canonical path, for loop detection.
        public var canonical: @Sendable (String) -> String
        public var isBlockDevice: @Sendable (String) -> Bool

        public init(
            accessError: @escaping @Sendable (String) -> Int32,
            read: @escaping @Sendable (String, Int, Int) throws -> [UInt8],
            canonical: @escaping @Sendable (String) -> String = { $0 },
            isBlockDevice: @escaping @Sendable (String) -> Bool = { _ in false }
        ) {
            self.accessError = accessError
            self.read = read
            self.canonical = canonical
            self.isBlockDevice = isBlockDevice
        }

        public static let host = Files(
            accessError: { path in
                let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
                guard fd >= 0 else { return errno }
                close(fd)
                return 0
            },
            read: { path, offset, length in
                // Non-blocking and only regular files or block devices: a FIFO
                // planted in a chain must not hang the start.
                let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
                guard fd >= 0 else { throw ShimError.system("open \(path)") }
                defer { close(fd) }
                var info = stat()
                guard fstat(fd, &info) == 0 else { throw ShimError.system("stat \(path)") }
                let type = info.st_mode & S_IFMT
                guard type == S_IFREG || type == S_IFBLK else {
                    throw ShimError(.invalidArgument, "storage file '\(path)' is neither a regular file nor a block device")
                }
                var buffer = [UInt8](repeating: 0, count: length)
                let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(offset)) }
                guard count >= 0 else { throw ShimError.system("read \(path)") }
                return Array(buffer.prefix(count))
            },
            canonical: { path in
                guard let resolved = realpath(path, nil) else { return path }
                defer { free(resolved) }
                return String(cString: resolved)
            },
            isBlockDevice: { path in
                var info = stat()
                return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFBLK
            })
    }

    /// libvirt refuses longer chains too (VIR_STORAGE_MAX_CHAIN is far lower in practice).
    static let maximumDepth = 200

    let file: String
    let files: Files
    let uid: UInt32
    let gid: UInt32

    public init(file: String, files: Files = .host, uid: UInt32 = geteuid(), gid: UInt32 = getegid()) {
        self.file = file
        self.files = files
        self.uid = uid
        self.gid = gid
    }

    /// The spec QEMU gets (chains filled in, optional disks dropped) and what was dropped.
    ///
    /// `coldBoot` is false for a restore: the saved guest state describes
    /// every device, so a hard disk can no longer be left out, while a
    /// requisite cdrom now loses its medium instead of failing (libvirt's
    /// qemuDomainCheckDiskStartupPolicy).
    public func prepare(_ input: DomainSpec, coldBoot: Bool = true) throws -> (DomainSpec, [Drop]) {
        var spec = input
        var drops: [Drop] = []
        // libvirt 9.0's node numbers: every top image and declared layer,
        // last disk first (a disk dropped below keeps its number), then the
        // probed layers in the order they are found.
        var next = 1
        for index in spec.devices.disks.indices.reversed() {
            spec.devices.disks[index].nodeIndex = next
            next += 1
            for layer in spec.devices.disks[index].backingChain.indices {
                spec.devices.disks[index].backingChain[layer].nodeIndex = next
                next += 1
            }
        }
        // Last to first, like libvirt, since entries are removed while walking.
        for index in spec.devices.disks.indices.reversed() {
            var disk = spec.devices.disks[index]
            guard let source = disk.source else { continue }
            do {
                try resolveChain(&disk, source: source, nextNode: &next)
                spec.devices.disks[index] = disk
            } catch let error as ShimError {
                // libvirt's decision table: a cdrom or floppy drops its medium when
                // optional, or requisite on a restore; an optional hard disk
                // is removed at a cold boot only; everything else fails.
                let policy = disk.startupPolicy ?? .mandatory
                if disk.device != .disk, policy == .optional || (policy == .requisite && !coldBoot) {
                    disk.source = nil
                    disk.backingChain = []
                    disk.backingChainComplete = true
                    // Kept, it would be invalid for the next medium (as libvirt resets it).
                    disk.startupPolicy = nil
                    spec.devices.disks[index] = disk
                    drops.append(Drop(targetDev: disk.targetDev, alias: disk.alias, source: source, reason: "missing-on-start", why: error.message))
                } else if policy == .optional, coldBoot {
                    spec.devices.disks.remove(at: index)
                    drops.append(Drop(targetDev: disk.targetDev, alias: disk.alias, source: source, reason: "drop-missing-on-start", why: error.message))
                } else if !coldBoot {
                    throw ShimError(
                        error.code,
                        "\(error.message); disk '\(disk.targetDev)' was part of the guest when it was saved, so the restore needs it: put the image back, or boot cold with --force-boot (the saved state is then discarded)",
                        cause: error.cause)
                } else {
                    // libvirt's text first, then which disk and what to do.
                    let without = disk.device == .disk ? "start without this disk" : "start with no medium"
                    throw ShimError(
                        error.code,
                        "\(error.message); disk '\(disk.targetDev)' cannot start without it: fix the image, or set <source startupPolicy='optional'> to \(without)",
                        cause: error.cause)
                }
            }
        }
        return (spec, drops.reversed())
    }

    private func cannotAccess(_ path: String, of parent: String?, errno code: Int32) -> ShimError {
        let text = String(cString: strerror(code))
        let what = parent.map { "backing file '\(path)' of storage file '\($0)'" } ?? "storage file '\(path)'"
        return ShimError(
            .invalidArgument, "\(file): Cannot access \(what) (as uid:\(uid), gid:\(gid)): \(text)", cause: SystemError(code))
    }

    /// The qcow2 header of an image, nil for any other format.
    func header(of path: String) throws -> QCOW2Header? {
        let prefix = try files.read(path, 0, 65536)
        do {
            return try QCOW2Header.parse(prefix, readAt: { try files.read(path, $0, $1) })
        } catch let malformed as QCOW2Header.Malformed {
            throw ShimError(.invalidArgument, "\(file): storage file '\(path)' has a qcow2 header vmshim cannot use: \(malformed.reason)", cause: malformed)
        }
    }

    /// One image of a chain: it must be reachable, and not one seen above it.
    private func checkLayer(_ path: String, under upper: String?, seen: inout Set<String>) throws {
        let code = files.accessError(path)
        guard code == 0 else { throw cannotAccess(path, of: upper, errno: code) }
        guard seen.insert(files.canonical(path)).inserted else {
            throw ShimError(.invalidArgument, "\(file): backing store for \(upper ?? path) (\(path)) is self-referential")
        }
    }

    /// Checks the source and every layer under it; probes what was not declared.
    func resolveChain(_ disk: inout DomainSpec.Disk, source: String, nextNode: inout Int) throws {
        var seen: Set<String> = []
        try checkLayer(source, under: nil, seen: &seen)
        var upper = (path: source, format: disk.format)
        for layer in disk.backingChain {
            try checkLayer(layer.path, under: upper.path, seen: &seen)
            upper = (layer.path, layer.format)
        }
        guard !disk.backingChainComplete else { return }
        // Probe on from the last known layer, reading qcow2 headers.
        var probed = disk.backingChain
        var knownHeader: QCOW2Header?  // read already while probing a format
        while upper.format == .qcow2 {
            guard let header = try knownHeader ?? self.header(of: upper.path) else {
                throw ShimError(
                    .invalidArgument,
                    "\(file): storage file '\(upper.path)' is declared qcow2 but is not a qcow2 image; fix <driver type=…> or the <backingStore> format")
            }
            guard let name = header.backingFile, !name.isEmpty else { break }
            guard !name.contains("://"), !name.hasPrefix("json:") else {
                throw ShimError(
                    .unsupported, "\(file): backing file '\(name)' of storage file '\(upper.path)' is not a local file; vmshim supports local backing files only")
            }
            let resolved = name.hasPrefix("/") ? name : FileIO.parentDirectory(of: upper.path) + "/" + name
            try checkLayer(resolved, under: upper.path, seen: &seen)
            var formatName = header.backingFormat
            knownHeader = nil
            if formatName == nil {
                // Like libvirt: probe, but trust the probe only for an image
                // without a backing file of its own (a raw guess could expose one).
                let probedHeader = try self.header(of: resolved)
                if probedHeader?.backingFile?.isEmpty ?? true { formatName = probedHeader == nil ? "raw" : "qcow2" }
                knownHeader = probedHeader
            }
            guard let formatName else {
                throw ShimError(
                    .invalidArgument,
                    "\(file): format of backing image '\(resolved)' of image '\(upper.path)' was not specified in the image metadata (See https://libvirt.org/kbase/backing_chains.html for troubleshooting)")
            }
            guard let format = DomainSpec.Disk.Format(rawValue: formatName) else {
                throw ShimError(
                    .unsupported, "\(file): backing file '\(resolved)' of storage file '\(upper.path)' has format '\(formatName)'; vmshim supports raw and qcow2")
            }
            guard probed.count < DiskStorage.maximumDepth else {
                throw ShimError(.unsupported, "\(file): the backing chain of '\(source)' is more than \(DiskStorage.maximumDepth) images deep")
            }
            let type: DomainSpec.Disk.SourceType = files.isBlockDevice(resolved) ? .block : .file
            var layer = DomainSpec.Disk.BackingLayer(sourceType: type, path: resolved, format: format)
            layer.nodeIndex = nextNode
            nextNode += 1
            probed.append(layer)
            upper = (resolved, format)
        }
        disk.backingChain = probed
        disk.backingChainComplete = true
    }
}
