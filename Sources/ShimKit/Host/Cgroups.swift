#if canImport(Glibc)
import Glibc
#endif

/// The dedicated cgroup of one VM's QEMU: `vmshim-<name>` under the cgroup the
/// shim runs in, in every hierarchy (cgroup v1) or in the unified one (v2),
/// with the domain's `<memtune>`, `<cputune>` and `<blkiotune>` written to it
/// as libvirt writes them. Created before QEMU starts, QEMU moved in right
/// after it is spawned (before it starts any thread of its own), removed when
/// QEMU has ended or the start failed.
public struct Cgroups: Sendable {
    /// The limits a domain asks for (from `DomainSpec.Tuning`).
    public typealias Tuning = DomainSpec.Tuning

    /// One mounted hierarchy and the shim's place in it.
    public struct Hierarchy: Sendable, Equatable {
        /// v1: the controllers of the mount ("memory", "cpu", "cpuacct",
        /// "name=systemd", …); v2: those the shim's cgroup offers.
        public var controllers: Set<String>
        public var mountPoint: String
        /// The shim's own cgroup, as a directory.
        public var shimDirectory: String
    }

    public enum Version: String, Sendable { case v1, v2 }

    public let version: Version
    public let hierarchies: [Hierarchy]
    let fs: CgroupFS
    /// This process, which v2 may move into a leaf of its own cgroup.
    var selfPID: Int32 = getpid()

    /// How the shim's cgroups are laid out, from /proc/self/mountinfo and
    /// /proc/self/cgroup. v2 when the only cgroup mount with controllers is
    /// cgroup2; v1 (including hybrid, whose cgroup2 mount has no
    /// controllers) otherwise.
    public static func discover(
        mountInfo: String, selfCgroup: String, fs: CgroupFS = .host
    ) throws -> Cgroups {
        var memberships: [(controllers: [String], path: String)] = []
        for line in selfCgroup.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            memberships.append((fields[1].split(separator: ",").map(String.init), String(fields[2])))
        }
        var v1: [Hierarchy] = []
        var v2: Hierarchy?
        for line in mountInfo.split(whereSeparator: \.isNewline) {
            // id parent major:minor root mount-point options [optional...] - fstype source super-options
            let parts = line.split(separator: " ").map(String.init)
            guard let dash = parts.firstIndex(of: "-"), dash >= 6, dash + 3 <= parts.count else { continue }
            let root = unescapeMountField(parts[3])
            let mountPoint = unescapeMountField(parts[4])
            let type = parts[dash + 1]
            let superOptions = parts[dash + 3].split(separator: ",").map(String.init)
            switch type {
            case "cgroup":
                let controllers = Set(superOptions.filter { $0 != "rw" && $0 != "ro" && !$0.hasPrefix("release_agent") && !["clone_children", "noprefix", "xattr", "cpuset_v2_mode"].contains($0) })
                guard let membership = memberships.first(where: { !$0.controllers.isEmpty && Set($0.controllers) == controllers }) else { continue }
                v1.append(Hierarchy(controllers: controllers, mountPoint: mountPoint, shimDirectory: directory(mountPoint, root, membership.path)))
            case "cgroup2":
                guard let membership = memberships.first(where: { $0.controllers.isEmpty || $0.controllers == [""] }) else { continue }
                let shimDirectory = directory(mountPoint, root, membership.path)
                let offered = (fs.read(shimDirectory + "/cgroup.controllers") ?? "").split(whereSeparator: { $0 == " " || $0.isNewline })
                v2 = Hierarchy(controllers: Set(offered.map(String.init)), mountPoint: mountPoint, shimDirectory: shimDirectory)
            default:
                continue
            }
        }
        if !v1.contains(where: { !$0.controllers.allSatisfy { $0.hasPrefix("name=") } }), let v2 {
            return Cgroups(version: .v2, hierarchies: [v2], fs: fs)
        }
        guard !v1.isEmpty else {
            throw ShimError(
                .unsupported,
                "no cgroup hierarchy is mounted for this process (see /proc/self/mountinfo); mount cgroup2 on /sys/fs/cgroup, or use <resource register='none'/>")
        }
        return Cgroups(version: .v1, hierarchies: v1, fs: fs)
    }

    /// The host's layout (blocking reads of two small /proc files).
    public static func host() throws -> Cgroups {
        let mountInfo = try FileIO.readString("/proc/self/mountinfo")
        let selfCgroup = try FileIO.readString("/proc/self/cgroup")
        return try discover(mountInfo: mountInfo, selfCgroup: selfCgroup)
    }

    /// A path in the hierarchy seen through a mount whose root is `root`
    /// (a container's cgroup namespace mounts a subtree).
    static func directory(_ mountPoint: String, _ root: String, _ path: String) -> String {
        var relative = path
        if root != "/", relative == root || relative.hasPrefix(root + "/") {
            relative = String(relative.dropFirst(root.count))
        }
        if relative.isEmpty || relative == "/" { return mountPoint }
        return mountPoint == "/" ? relative : mountPoint + relative
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    static func unescapeMountField(_ field: String) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(field.utf8)
        var index = 0
        while index < utf8.count {
            if utf8[index] == UInt8(ascii: "\\"), index + 4 <= utf8.count,
                let value = UInt8(String(decoding: utf8[(index + 1)..<(index + 4)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func leafName(domain: String) -> String { "vmshim-\(domain)" }

    // MARK: - The VM's cgroup

    /// A created VM cgroup: its directory in each hierarchy.
    public struct Placement: Sendable, Equatable {
        public var directories: [String]
    }

    /// Creates `vmshim-<name>` in every hierarchy and writes the limits.
    /// Nothing is left behind when it fails.
    public func create(domain: String, tuning: Tuning, vcpus: Int) throws -> Placement {
        let leaf = Cgroups.leafName(domain: domain)
        var created: [String] = []
        do {
            switch version {
            case .v1:
                for hierarchy in hierarchies {
                    let directory = hierarchy.shimDirectory + "/" + leaf
                    try makeLeaf(directory)
                    created.append(directory)
                    if hierarchy.controllers.contains("cpuset") {
                        // A new v1 cpuset starts empty and refuses tasks until given its parent's.
                        for knob in ["cpuset.cpus", "cpuset.mems"] {
                            let inherited = (fs.read(hierarchy.shimDirectory + "/" + knob) ?? "").trimmingWhitespace()
                            try write(directory + "/" + knob, inherited)
                        }
                    }
                }
                try applyV1(tuning, vcpus: vcpus, leaf: leaf)
            case .v2:
                guard let hierarchy = hierarchies.first else { throw ShimError(.internalError, "no cgroup v2 hierarchy") }
                try delegate(tuning, in: hierarchy)
                let directory = hierarchy.shimDirectory + "/" + leaf
                try makeLeaf(directory)
                created.append(directory)
                try applyV2(tuning, vcpus: vcpus, directory: directory)
            }
        } catch {
            for directory in created.reversed() { try? fs.removeDirectory(directory) }
            throw error
        }
        return Placement(directories: created)
    }

    /// A directory left by a start that died is reused when it is empty;
    /// one with processes belongs to a live VM.
    private func makeLeaf(_ directory: String) throws {
        do {
            try fs.makeDirectory(directory)
        } catch let error as ShimError where (error.cause as? SystemError)?.errno == EEXIST {
            let procs = (fs.read(directory + "/cgroup.procs") ?? "").trimmingWhitespace()
            guard procs.isEmpty else {
                throw ShimError(
                    .alreadyExists,
                    "the cgroup \(directory) already holds processes (\(procs.split(whereSeparator: \.isNewline).prefix(5).joined(separator: ", "))): another VM with this name runs under the same parent cgroup")
            }
        }
    }

    private func write(_ path: String, _ value: String) throws {
        try fs.write(path, value)
    }

    private func applyV1(_ tuning: Tuning, vcpus: Int, leaf: String) throws {
        func directory(_ controller: String) -> String? {
            hierarchies.first { $0.controllers.contains(controller) }.map { $0.shimDirectory + "/" + leaf }
        }
        if tuning.hasMemoryLimits {
            guard let memory = directory("memory") else { throw missingController("memory", "<memtune>") }
            if let hard = tuning.memoryHardLimitKiB { try write(memory + "/memory.limit_in_bytes", Self.bytes(hard)) }
            if let soft = tuning.memorySoftLimitKiB { try write(memory + "/memory.soft_limit_in_bytes", Self.bytes(soft)) }
            if let swap = tuning.swapHardLimitKiB {
                let knob = memory + "/memory.memsw.limit_in_bytes"
                guard fs.exists(knob) else {
                    throw ShimError(
                        .unsupported,
                        "<memtune><swap_hard_limit> needs swap accounting, and \(knob) does not exist: boot the host with swapaccount=1, or remove swap_hard_limit")
                }
                try write(knob, Self.bytes(swap))
            }
        }
        if tuning.hasCPULimits {
            guard let cpu = directory("cpu") else { throw missingController("cpu", "<cputune>") }
            if let shares = tuning.cpuShares { try write(cpu + "/cpu.shares", "\(shares)") }
            if let period = tuning.cpuPeriodMicros { try write(cpu + "/cpu.cfs_period_us", "\(period)") }
            if let quota = tuning.cpuQuotaMicros { try write(cpu + "/cpu.cfs_quota_us", "\(Self.totalQuota(quota, vcpus: vcpus))") }
        }
        if let weight = tuning.blkioWeight {
            guard let blkio = directory("blkio") else { throw missingController("blkio", "<blkiotune>") }
            try writeFirst([blkio + "/blkio.bfq.weight", blkio + "/blkio.weight"], "\(weight)", what: "<blkiotune><weight>")
        }
    }

    /// cgroup v2 lets a cgroup hand controllers to children only while it
    /// holds no processes (the root excepted).
    private func delegate(_ tuning: Tuning, in hierarchy: Hierarchy) throws {
        var needed: [String] = []
        if tuning.hasMemoryLimits { needed.append("memory") }
        if tuning.hasCPULimits { needed.append("cpu") }
        if tuning.blkioWeight != nil { needed.append("io") }
        guard !needed.isEmpty else { return }
        for controller in needed where !hierarchy.controllers.contains(controller) {
            throw missingController(controller, controller == "memory" ? "<memtune>" : controller == "cpu" ? "<cputune>" : "<blkiotune>")
        }
        let control = hierarchy.shimDirectory + "/cgroup.subtree_control"
        let enabled = Set((fs.read(control) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
        let missing = needed.filter { !enabled.contains($0) }
        guard !missing.isEmpty else { return }
        let request = missing.map { "+" + $0 }.joined(separator: " ")
        do {
            try fs.write(control, request)
        } catch let error as ShimError where (error.cause as? SystemError)?.errno == EBUSY {
            // The no-internal-processes rule. When vmshim is alone in its
            // cgroup (a pod's main process), it moves itself into a leaf
            // beside the VM's, as container runtimes do, and delegates.
            let members = (fs.read(hierarchy.shimDirectory + "/cgroup.procs") ?? "").split(whereSeparator: \.isNewline)
            guard members == [Substring("\(selfPID)")] else {
                throw ShimError(
                    .unsupported,
                    "cannot give the \(missing.joined(separator: ", ")) controller to a child of \(hierarchy.shimDirectory): on cgroup v2 a cgroup that holds processes cannot delegate controllers, and besides this vmshim it holds \(members.filter { $0 != Substring("\(selfPID)") }.prefix(5).joined(separator: ", ")). Start vmshim in a cgroup of its own, remove the <memtune>/<cputune>/<blkiotune> limits, or use <resource register='none'/>",
                    cause: error)
            }
            let leaf = hierarchy.shimDirectory + "/" + Cgroups.supervisorLeaf
            do {
                try fs.makeDirectory(leaf)
            } catch let exists as ShimError where (exists.cause as? SystemError)?.errno == EEXIST {}
            try fs.write(leaf + "/cgroup.procs", "\(selfPID)")
            try fs.write(control, request)
        }
    }

    /// Where a v2 vmshim moves itself so its cgroup can delegate controllers.
    public static let supervisorLeaf = "vmshim-supervisor"

    private func applyV2(_ tuning: Tuning, vcpus: Int, directory: String) throws {
        if let hard = tuning.memoryHardLimitKiB { try write(directory + "/memory.max", Self.bytesOrMax(hard)) }
        if let soft = tuning.memorySoftLimitKiB { try write(directory + "/memory.high", Self.bytesOrMax(soft)) }
        if let swap = tuning.swapHardLimitKiB {
            let knob = directory + "/memory.swap.max"
            guard fs.exists(knob) else {
                throw ShimError(.unsupported, "<memtune><swap_hard_limit> needs swap accounting, and \(knob) does not exist; remove swap_hard_limit")
            }
            try write(knob, Self.bytesOrMax(swap))
        }
        // libvirt writes shares to cpu.weight as they are (1…10000 there).
        if let shares = tuning.cpuShares { try write(directory + "/cpu.weight", "\(shares)") }
        if tuning.cpuPeriodMicros != nil || tuning.cpuQuotaMicros != nil {
            let period = tuning.cpuPeriodMicros ?? 100_000
            let quota = tuning.cpuQuotaMicros.map { Self.totalQuota($0, vcpus: vcpus) } ?? -1
            try write(directory + "/cpu.max", "\(quota < 0 ? "max" : "\(quota)") \(period)")
        }
        if let weight = tuning.blkioWeight {
            try writeFirst([directory + "/io.bfq.weight", directory + "/io.weight"], "default \(weight)", what: "<blkiotune><weight>")
        }
    }

    /// `<cputune><quota>` is per vCPU; with one cgroup for all of QEMU the
    /// whole gets quota × vCPUs, as libvirt's domain-level cgroup does.
    static func totalQuota(_ quota: Int64, vcpus: Int) -> Int64 {
        guard quota > 0 else { return -1 }
        let (total, overflow) = quota.multipliedReportingOverflow(by: Int64(max(vcpus, 1)))
        return overflow ? -1 : total
    }

    static func bytes(_ kib: UInt64) -> String {
        kib >= DomainSpec.Tuning.unlimitedKiB ? "-1" : "\(kib * 1024)"
    }

    static func bytesOrMax(_ kib: UInt64) -> String {
        kib >= DomainSpec.Tuning.unlimitedKiB ? "max" : "\(kib * 1024)"
    }

    private func writeFirst(_ candidates: [String], _ value: String, what: String) throws {
        guard let knob = candidates.first(where: { fs.exists($0) }) else {
            throw ShimError(
                .unsupported,
                "\(what) needs an I/O scheduler with weights (none of \(candidates.map { FileIO.baseName(of: $0) }.joined(separator: ", ")) exists in the cgroup): use the bfq scheduler for the VM's disks, or remove it")
        }
        try write(knob, value)
    }

    private func missingController(_ controller: String, _ element: String) -> ShimError {
        ShimError(
            .unsupported,
            "\(element) needs the \(controller) cgroup controller, which this vmshim's cgroup does not have (\(version.rawValue): \(hierarchies.map(\.shimDirectory).joined(separator: ", "))); enable it, or remove \(element)")
    }

    // MARK: - Membership and removal

    /// Moves a process (all its threads) into the VM's cgroup.
    public func attach(pid: Int32, to placement: Placement) throws {
        for directory in placement.directories {
            try fs.write(directory + "/cgroup.procs", "\(pid)")
        }
    }

    /// Removes the VM's cgroup. A cgroup is removable once its processes have
    /// exited; a QEMU just killed may take a moment to leave, so this retries
    /// briefly. Returns the directories that could not be removed.
    @discardableResult
    public static func remove(_ placement: Placement, fs: CgroupFS = .host) -> [String] {
        var left: [String] = []
        for directory in placement.directories.reversed() {
            var removed = false
            for attempt in 0..<50 {
                do {
                    try fs.removeDirectory(directory)
                    removed = true
                    break
                } catch let error as ShimError where (error.cause as? SystemError)?.errno == ENOENT {
                    removed = true
                    break
                } catch {
                    if attempt < 49 { usleep(10_000) }
                }
            }
            if !removed { left.append(directory) }
        }
        return left
    }
}

/// The file operations cgroups need, so tests can stand in a fake tree.
public struct CgroupFS: Sendable {
    public var makeDirectory: @Sendable (String) throws -> Void
    public var removeDirectory: @Sendable (String) throws -> Void
    public var write: @Sendable (_ path: String, _ value: String) throws -> Void
    public var read: @Sendable (String) -> String?
    public var exists: @Sendable (String) -> Bool

    public init(
        makeDirectory: @escaping @Sendable (String) throws -> Void, removeDirectory: @escaping @Sendable (String) throws -> Void,
        write: @escaping @Sendable (String, String) throws -> Void, read: @escaping @Sendable (String) -> String?,
        exists: @escaping @Sendable (String) -> Bool
    ) {
        self.makeDirectory = makeDirectory
        self.removeDirectory = removeDirectory
        self.write = write
        self.read = read
        self.exists = exists
    }

    public static let host = CgroupFS(
        makeDirectory: { path in
            guard mkdir(path, 0o755) == 0 else {
                let code = errno
                let error = ShimError.system("cannot create the cgroup \(path)", errno: code)
                guard code == EACCES || code == EPERM || code == EROFS else { throw error }
                throw ShimError(
                    .permissionDenied,
                    "\(error.message): vmshim gives each QEMU a cgroup of its own under its own cgroup; run it where that cgroup is writable (as root, or in a delegated cgroup), or add <resource register='none'/> to keep QEMU in vmshim's cgroup",
                    cause: error.cause)
            }
        },
        removeDirectory: { path in
            guard rmdir(path) == 0 else { throw ShimError.system("cannot remove the cgroup \(path)") }
        },
        write: { path, value in
            // One write(2) per value: cgroup files take a value per write.
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ShimError.system("cannot open \(path)") }
            defer { close(fd) }
            let bytes = Array(value.utf8)
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard written == bytes.count else { throw ShimError.system("cannot write '\(value)' to \(path)") }
        },
        read: { path in try? FileIO.readString(path) },
        exists: { path in access(path, F_OK) == 0 }
    )
}
