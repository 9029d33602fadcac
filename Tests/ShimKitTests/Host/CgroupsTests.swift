import Foundation
import Synchronization
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// An in-memory cgroupfs that behaves like the kernel where vmshim relies on
/// it: mkdir creates a group with its controllers' files, rmdir refuses a
/// group with processes, v2 refuses to delegate controllers from a group
/// with processes, and cgroup.procs moves a process between groups.
final class FakeCgroupFS: Sendable {
    struct State {
        var files: [String: String] = [:]
        var directories: Set<String> = []
        /// Directory → its hierarchy's controllers (by mount point).
        var controllersOfMount: [String: Set<String>] = [:]
        var v2Mount: String?
    }
    let state = Mutex(State())

    func mount(_ path: String, controllers: Set<String>, v2: Bool = false) {
        state.withLock { state in
            state.controllersOfMount[path] = controllers
            if v2 { state.v2Mount = path }
            state.directories.insert(path)
        }
    }

    func group(_ path: String, files: [String: String] = [:]) {
        state.withLock { state in
            state.directories.insert(path)
            state.files[path + "/cgroup.procs"] = state.files[path + "/cgroup.procs"] ?? ""
            for (name, value) in files { state.files[path + "/" + name] = value }
        }
    }

    func read(_ path: String) -> String? { state.withLock { $0.files[path] } }
    func isDirectory(_ path: String) -> Bool { state.withLock { $0.directories.contains(path) } }

    static func errno(_ code: Int32, _ what: String) -> ShimError {
        ShimError(.system, "\(what): \(SystemError(code))", cause: SystemError(code))
    }

    var fs: CgroupFS {
        CgroupFS(
            makeDirectory: { path in
                try self.state.withLock { state in
                    guard !state.directories.contains(path) else { throw Self.errno(EEXIST, "mkdir \(path)") }
                    let parent = FileIO.parentDirectory(of: path)
                    guard state.directories.contains(parent) else { throw Self.errno(ENOENT, "mkdir \(path)") }
                    state.directories.insert(path)
                    state.files[path + "/cgroup.procs"] = ""
                    guard let mount = state.controllersOfMount.keys.filter({ path.hasPrefix($0 + "/") }).max(by: { $0.count < $1.count }),
                        let controllers = state.controllersOfMount[mount]
                    else { return }
                    var knobs: [String] = []
                    if mount == state.v2Mount {
                        knobs = ["cgroup.subtree_control", "cgroup.controllers"]
                        let enabled = (state.files[parent + "/cgroup.subtree_control"] ?? "").split(separator: " ").map(String.init)
                        state.files[path + "/cgroup.controllers"] = enabled.joined(separator: " ")
                        state.files[path + "/cgroup.subtree_control"] = ""
                        if enabled.contains("memory") { knobs += ["memory.max", "memory.high", "memory.swap.max"] }
                        if enabled.contains("cpu") { knobs += ["cpu.weight", "cpu.max"] }
                        if enabled.contains("io") { knobs += ["io.weight"] }
                    } else {
                        if controllers.contains("memory") { knobs += ["memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes"] }
                        if controllers.contains("cpu") { knobs += ["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"] }
                        if controllers.contains("blkio") { knobs += ["blkio.weight"] }
                        if controllers.contains("cpuset") { knobs += ["cpuset.cpus", "cpuset.mems"] }
                    }
                    for knob in knobs where state.files[path + "/" + knob] == nil { state.files[path + "/" + knob] = "" }
                }
            },
            removeDirectory: { path in
                try self.state.withLock { state in
                    guard state.directories.contains(path) else { throw Self.errno(ENOENT, "rmdir \(path)") }
                    guard (state.files[path + "/cgroup.procs"] ?? "").isEmpty else { throw Self.errno(EBUSY, "rmdir \(path)") }
                    guard !state.directories.contains(where: { $0.hasPrefix(path + "/") }) else { throw Self.errno(EBUSY, "rmdir \(path)") }
                    state.directories.remove(path)
                    for key in state.files.keys where key.hasPrefix(path + "/") { state.files[key] = nil }
                }
            },
            write: { path, value in
                try self.state.withLock { state in
                    guard state.files[path] != nil else { throw Self.errno(ENOENT, "open \(path)") }
                    let directory = FileIO.parentDirectory(of: path)
                    switch FileIO.baseName(of: path) {
                    case "cgroup.procs":
                        if directory.hasPrefix(state.v2Mount ?? "\u{0}") {
                            // v2: no processes in a group that delegates controllers.
                            guard (state.files[directory + "/cgroup.subtree_control"] ?? "").isEmpty || directory == state.v2Mount else {
                                throw Self.errno(EBUSY, "write \(path)")
                            }
                        }
                        for key in state.files.keys where key.hasSuffix("/cgroup.procs") {
                            let sameMount = state.controllersOfMount.keys.contains { key.hasPrefix($0 + "/") && directory.hasPrefix($0 + "/") }
                            if sameMount {
                                state.files[key] = (state.files[key] ?? "").split(separator: "\n").filter { $0 != value }.joined(separator: "\n")
                            }
                        }
                        let current = state.files[path] ?? ""
                        state.files[path] = current.isEmpty ? value : current + "\n" + value
                    case "cgroup.subtree_control":
                        if directory != state.v2Mount, !(state.files[directory + "/cgroup.procs"] ?? "").isEmpty {
                            throw Self.errno(EBUSY, "write \(path)")
                        }
                        var enabled = (state.files[path] ?? "").split(separator: " ").map(String.init)
                        for item in value.split(separator: " ") where item.hasPrefix("+") { enabled.append(String(item.dropFirst())) }
                        state.files[path] = enabled.joined(separator: " ")
                    default:
                        state.files[path] = value
                    }
                }
            },
            read: { path in self.state.withLock { $0.files[path] } },
            exists: { path in self.state.withLock { $0.files[path] != nil || $0.directories.contains(path) } })
    }
}

@Suite struct CgroupPlacement {
    /// This machine's layout: v1 controllers plus an empty cgroup2 mount (hybrid).
    static let hybridMountInfo = """
        30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
        31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
        32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        33 30 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
        34 30 0:30 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
        35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
        36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """
    static let hybridSelf = """
        9:name=systemd:/
        4:memory:/pods/pod1
        3:cpuset:/
        2:blkio:/pods/pod1
        1:cpu:/pods/pod1
        0::/
        """

    func hybrid() -> FakeCgroupFS {
        let fake = FakeCgroupFS()
        for (name, controllers) in [("cpu", ["cpu"]), ("memory", ["memory"]), ("cpuset", ["cpuset"]), ("blkio", ["blkio"]), ("systemd", ["name=systemd"])] {
            fake.mount("/sys/fs/cgroup/" + name, controllers: Set(controllers))
        }
        fake.group("/sys/fs/cgroup/cpu/pods/pod1")
        fake.group("/sys/fs/cgroup/memory/pods/pod1")
        fake.group("/sys/fs/cgroup/blkio/pods/pod1")
        fake.group("/sys/fs/cgroup/cpuset", files: ["cpuset.cpus": "0-1\n", "cpuset.mems": "0\n"])
        fake.group("/sys/fs/cgroup/systemd")
        return fake
    }

    @Test func v1PlacesQEMUUnderTheShimsCgroupInEveryHierarchyWithTheLimits() throws {
        let fake = hybrid()
        let cgroups = try Cgroups.discover(mountInfo: Self.hybridMountInfo, selfCgroup: Self.hybridSelf, fs: fake.fs)
        #expect(cgroups.version == .v1)
        #expect(Set(cgroups.hierarchies.map(\.shimDirectory)) == [
            "/sys/fs/cgroup/cpu/pods/pod1", "/sys/fs/cgroup/memory/pods/pod1", "/sys/fs/cgroup/cpuset",
            "/sys/fs/cgroup/blkio/pods/pod1", "/sys/fs/cgroup/systemd",
        ])
        var tuning = DomainSpec.Tuning()
        tuning.memoryHardLimitKiB = 524_288
        tuning.memorySoftLimitKiB = 262_144
        tuning.swapHardLimitKiB = 1_048_576
        tuning.cpuShares = 512
        tuning.cpuPeriodMicros = 50_000
        tuning.cpuQuotaMicros = 25_000
        tuning.blkioWeight = 300
        let placement = try cgroups.create(domain: "web 1", tuning: tuning, vcpus: 2)
        #expect(placement.directories.count == 5)
        let memory = "/sys/fs/cgroup/memory/pods/pod1/vmshim-web 1"
        #expect(fake.read(memory + "/memory.limit_in_bytes") == "536870912")
        #expect(fake.read(memory + "/memory.soft_limit_in_bytes") == "268435456")
        #expect(fake.read(memory + "/memory.memsw.limit_in_bytes") == "1073741824")
        let cpu = "/sys/fs/cgroup/cpu/pods/pod1/vmshim-web 1"
        #expect(fake.read(cpu + "/cpu.shares") == "512")
        #expect(fake.read(cpu + "/cpu.cfs_period_us") == "50000")
        #expect(fake.read(cpu + "/cpu.cfs_quota_us") == "50000", "quota is per vCPU: 2 × 25000")
        #expect(fake.read("/sys/fs/cgroup/blkio/pods/pod1/vmshim-web 1/blkio.weight") == "300")
        #expect(fake.read("/sys/fs/cgroup/cpuset/vmshim-web 1/cpuset.cpus") == "0-1", "a v1 cpuset child gets its parent's CPUs")

        try cgroups.attach(pid: 4242, to: placement)
        #expect(fake.read(memory + "/cgroup.procs") == "4242")
        // Busy while QEMU is in it; removable once it has left.
        fake.state.withLock { state in for key in state.files.keys where key.hasSuffix("/cgroup.procs") { state.files[key] = "" } }
        #expect(Cgroups.remove(placement, fs: fake.fs).isEmpty)
        #expect(!fake.isDirectory(memory) && !fake.isDirectory(cpu))
        #expect(fake.isDirectory("/sys/fs/cgroup/memory/pods/pod1"))
    }

    @Test func v1FailuresLeaveNothingAndSayWhatToDo() throws {
        let fake = hybrid()
        // No swap accounting on this host.
        fake.state.withLock { state in state.controllersOfMount["/sys/fs/cgroup/memory"] = ["memory"] }
        let cgroups = try Cgroups.discover(mountInfo: Self.hybridMountInfo, selfCgroup: Self.hybridSelf, fs: fake.fs)
        var tuning = DomainSpec.Tuning()
        tuning.swapHardLimitKiB = 1024
        let fs = fake.fs
        let original = fs.makeDirectory
        let withoutSwap = CgroupFS(
            makeDirectory: { path in
                try original(path)
                fake.state.withLock { $0.files[path + "/memory.memsw.limit_in_bytes"] = nil }
            }, removeDirectory: fs.removeDirectory, write: fs.write, read: fs.read, exists: fs.exists)
        let noSwap = try Cgroups.discover(mountInfo: Self.hybridMountInfo, selfCgroup: Self.hybridSelf, fs: withoutSwap)
        #expect(throws: ShimError.self) { _ = try noSwap.create(domain: "vm", tuning: tuning, vcpus: 1) }
        do {
            _ = try noSwap.create(domain: "vm", tuning: tuning, vcpus: 1)
        } catch let error as ShimError {
            #expect(error.message.contains("swapaccount=1"), "\(error.message)")
        }
        #expect(!fake.isDirectory("/sys/fs/cgroup/memory/pods/pod1/vmshim-vm"), "nothing is left behind")
        #expect(!fake.isDirectory("/sys/fs/cgroup/cpu/pods/pod1/vmshim-vm"))

        // A leftover group with a live process belongs to another VM of that name.
        _ = try cgroups.create(domain: "twin", tuning: .init(), vcpus: 1)
        fake.state.withLock { $0.files["/sys/fs/cgroup/memory/pods/pod1/vmshim-twin/cgroup.procs"] = "777" }
        #expect(throws: ShimError.self) { _ = try cgroups.create(domain: "twin", tuning: .init(), vcpus: 1) }
        // An empty leftover (a start that died) is reused.
        fake.state.withLock { $0.files["/sys/fs/cgroup/memory/pods/pod1/vmshim-twin/cgroup.procs"] = "" }
        #expect(try cgroups.create(domain: "twin", tuning: .init(), vcpus: 1).directories.count == 5)
    }

    static let v2MountInfo = """
        30 25 0:26 /kubepods/pod1 /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
        """

    func unified(shimInLeaf: Bool) -> FakeCgroupFS {
        let fake = FakeCgroupFS()
        fake.mount("/sys/fs/cgroup", controllers: ["memory", "cpu", "io", "pids"], v2: true)
        if shimInLeaf {
            // The pod's cgroup delegates; the shim runs in a leaf below it.
            fake.group("/sys/fs/cgroup", files: ["cgroup.controllers": "cpu io memory pids", "cgroup.subtree_control": "cpu io memory pids"])
            fake.group("/sys/fs/cgroup/shim", files: ["cgroup.controllers": "cpu io memory pids", "cgroup.subtree_control": "", "cgroup.procs": ""])
        } else {
            fake.group("/sys/fs/cgroup/shim", files: ["cgroup.controllers": "cpu io memory pids", "cgroup.subtree_control": "", "cgroup.procs": "1"])
        }
        return fake
    }

    @Test func v2WritesTheUnifiedKnobsAndExplainsTheNoInternalProcessesRule() throws {
        // The container sees its own subtree: /proc/self/cgroup is relative to the namespace.
        let fake = unified(shimInLeaf: true)
        let cgroups = try Cgroups.discover(mountInfo: Self.v2MountInfo, selfCgroup: "0::/kubepods/pod1/shim\n", fs: fake.fs)
        #expect(cgroups.version == .v2)
        #expect(cgroups.hierarchies.map(\.shimDirectory) == ["/sys/fs/cgroup/shim"])
        var tuning = DomainSpec.Tuning()
        tuning.memoryHardLimitKiB = 524_288
        tuning.memorySoftLimitKiB = DomainSpec.Tuning.unlimitedKiB
        tuning.cpuShares = 200
        tuning.cpuQuotaMicros = 20_000
        tuning.blkioWeight = 500
        // The shim's leaf has no processes in this fake, so it may delegate.
        let placement = try cgroups.create(domain: "vm", tuning: tuning, vcpus: 4)
        let directory = "/sys/fs/cgroup/shim/vmshim-vm"
        #expect(placement.directories == [directory])
        #expect(fake.read("/sys/fs/cgroup/shim/cgroup.subtree_control")?.contains("memory") == true)
        #expect(fake.read(directory + "/memory.max") == "536870912")
        #expect(fake.read(directory + "/memory.high") == "max")
        #expect(fake.read(directory + "/cpu.weight") == "200")
        #expect(fake.read(directory + "/cpu.max") == "80000 100000")
        #expect(fake.read(directory + "/io.weight") == "default 500")
        try cgroups.attach(pid: 99, to: placement)
        #expect(fake.read(directory + "/cgroup.procs") == "99")

        // vmshim alone in its cgroup (a pod's main process, pid 1 here): the
        // kernel refuses to delegate from a group with processes, so the shim
        // moves itself into a leaf and the VM's group gets the controllers.
        let alone = unified(shimInLeaf: false)
        var pod = try Cgroups.discover(mountInfo: "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", selfCgroup: "0::/shim\n", fs: alone.fs)
        pod.selfPID = 1
        let moved = try pod.create(domain: "vm", tuning: tuning, vcpus: 1)
        #expect(moved.directories == ["/sys/fs/cgroup/shim/vmshim-vm"])
        #expect(alone.read("/sys/fs/cgroup/shim/vmshim-supervisor/cgroup.procs") == "1")
        #expect(alone.read("/sys/fs/cgroup/shim/cgroup.procs") == "")
        #expect(alone.read("/sys/fs/cgroup/shim/vmshim-vm/memory.max") == "536870912")

        // Other processes share the shim's cgroup: refuse, and say why and what to do.
        let shared = unified(shimInLeaf: false)
        shared.state.withLock { $0.files["/sys/fs/cgroup/shim/cgroup.procs"] = "1\n77" }
        var crowded = try Cgroups.discover(mountInfo: "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", selfCgroup: "0::/shim\n", fs: shared.fs)
        crowded.selfPID = 1
        do {
            _ = try crowded.create(domain: "vm", tuning: tuning, vcpus: 1)
            Issue.record("delegating from a cgroup with other processes must fail")
        } catch let error as ShimError {
            #expect(error.message.contains("cannot delegate controllers") && error.message.contains("77"), "\(error.message)")
            #expect(error.message.contains("register='none'"))
        }
        #expect(!shared.isDirectory("/sys/fs/cgroup/shim/vmshim-vm"))
        // Without limits no controller is needed: QEMU still gets its own group, nobody moves.
        let bare = try crowded.create(domain: "vm", tuning: .init(), vcpus: 1)
        #expect(bare.directories == ["/sys/fs/cgroup/shim/vmshim-vm"])
        #expect(!shared.isDirectory("/sys/fs/cgroup/shim/vmshim-supervisor"))
    }

    /// On the real kernel, through this host's cgroup2 mount (the unified
    /// hierarchy, with or without controllers): a process lands in the VM's
    /// group and the group goes once the process has left.
    @Test func realUnifiedHierarchyHoldsAndReleasesAProcess() throws {
        let mountInfo = try FileIO.readString("/proc/self/mountinfo")
        let unifiedOnly = mountInfo.split(whereSeparator: \.isNewline).filter { $0.contains(" - cgroup2 ") }
        try #require(!unifiedOnly.isEmpty, "this host has no cgroup2 mount")
        let cgroups = try Cgroups.discover(
            mountInfo: unifiedOnly.joined(separator: "\n"), selfCgroup: try FileIO.readString("/proc/self/cgroup"))
        #expect(cgroups.version == .v2)
        let name = "it-v2-\(getpid())"
        let placement = try cgroups.create(domain: name, tuning: .init(), vcpus: 1)
        let directory = try #require(placement.directories.first)
        defer { _ = Cgroups.remove(placement) }
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30"]
        try sleeper.run()
        try cgroups.attach(pid: sleeper.processIdentifier, to: placement)
        let membership = try FileIO.readString("/proc/\(sleeper.processIdentifier)/cgroup")
        #expect(membership.split(whereSeparator: \.isNewline).contains { $0.hasPrefix("0::") && $0.hasSuffix("/" + Cgroups.leafName(domain: name)) }, "\(membership)")
        #expect(try FileIO.readString(directory + "/cgroup.procs").contains("\(sleeper.processIdentifier)"))
        // SIGKILL: a test may have left SIGTERM ignored, which children inherit.
        kill(sleeper.processIdentifier, SIGKILL)
        sleeper.waitUntilExit()
        #expect(Cgroups.remove(placement).isEmpty)
        #expect(!FileIO.exists(directory))
    }

    @Test func mountInfoFieldsAreUnescaped() {
        #expect(Cgroups.unescapeMountField(#"/sys/fs/cgroup/a\040b"#) == "/sys/fs/cgroup/a b")
        #expect(Cgroups.directory("/sys/fs/cgroup/memory", "/", "/a/b") == "/sys/fs/cgroup/memory/a/b")
        #expect(Cgroups.directory("/sys/fs/cgroup", "/pod", "/pod") == "/sys/fs/cgroup")
    }
}
