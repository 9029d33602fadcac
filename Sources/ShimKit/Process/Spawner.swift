import CShimKit
#if canImport(Glibc)
import Glibc
#endif

/// What to spawn and with which file descriptors.
public struct SpawnSpec: Sendable {
    public var executable: String
    /// argv including argv[0].
    public var arguments: [String]
    public var environment: [String]
    /// Opened by the caller; becomes the child's stdout and stderr.
    public var outputFD: Int32
    /// Parent fd → child fd. Child fds are 3, 4, … without gaps; nothing else is inherited.
    public var inheritedFDs: [(parent: Int32, child: Int32)]
    /// Start the child in its own session, so a terminal's Ctrl-C or the
    /// shim's process group being signalled does not reach QEMU.
    public var newSession: Bool
    /// Start the child with no capabilities and no_new_privs.
    public var dropPrivileges: Bool
    /// Start the child as this user and group, with these supplementary groups.
    public var runAs: ProcessCredentials?
    /// Host CPUs the child may run on (nil: the shim's own affinity).
    public var cpuAffinity: [Int]?

    public init(
        executable: String, arguments: [String], environment: [String], outputFD: Int32,
        inheritedFDs: [(parent: Int32, child: Int32)] = [], newSession: Bool = true, dropPrivileges: Bool = false,
        runAs: ProcessCredentials? = nil, cpuAffinity: [Int]? = nil
    ) {
        self.cpuAffinity = cpuAffinity
        self.dropPrivileges = dropPrivileges
        self.runAs = runAs
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.outputFD = outputFD
        self.inheritedFDs = inheritedFDs
        self.newSession = newSession
    }
}

/// Who a child runs as (`vmshim run --qemu-user/--qemu-group`).
public struct ProcessCredentials: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    /// Supplementary groups, as initgroups(3) would give the user.
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, groups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// A user (name or number) and optionally a group (name or number; the
    /// user's primary group by default), resolved from the passwd and group
    /// databases, with the user's supplementary groups.
    public static func resolve(user: String, group: String?) throws -> ProcessCredentials {
        let uid: UInt32
        let primary: UInt32
        let name: String?
        if let entry = getpwnam(user) {
            uid = entry.pointee.pw_uid
            primary = entry.pointee.pw_gid
            name = String(cString: entry.pointee.pw_name)
        } else if let number = UInt32(user) {
            uid = number
            primary = getpwuid(number)?.pointee.pw_gid ?? number
            name = getpwuid(number).map { String(cString: $0.pointee.pw_name) }
        } else {
            throw ShimError(.invalidArgument, "--qemu-user: no user named '\(user)' (see /etc/passwd); give a user name or number")
        }
        var gid = primary
        if let group {
            if let entry = getgrnam(group) {
                gid = entry.pointee.gr_gid
            } else if let number = UInt32(group) {
                gid = number
            } else {
                throw ShimError(.invalidArgument, "--qemu-group: no group named '\(group)' (see /etc/group); give a group name or number")
            }
        }
        var groups: [UInt32] = [gid]
        if let name {
            var count: Int32 = 64
            var list = [gid_t](repeating: 0, count: Int(count))
            if getgrouplist(name, gid, &list, &count) < 0 {
                list = [gid_t](repeating: 0, count: Int(count))
                _ = getgrouplist(name, gid, &list, &count)
            }
            groups = Array(list.prefix(Int(max(count, 0))))
        }
        return ProcessCredentials(uid: uid, gid: gid, groups: groups)
    }
}

/// A spawned child with a pidfd, so signals and exit watching are immune to
/// pid reuse.
public struct SpawnedProcess: Sendable {
    public let pid: pid_t
    public let pidfd: Int32
}

public enum Spawner {
    /// posix_spawn with setsid, an explicit fd map and every other fd closed.
    ///
    /// Swift's Foundation.Process and swift-subprocess cannot pass extra fds on
    /// Linux, and QEMU needs its monitor and device fds at known numbers.
    public static func spawn(_ spec: SpawnSpec) throws -> SpawnedProcess {
        let highestChild = spec.inheritedFDs.map(\.child).max() ?? 2
        for mapping in spec.inheritedFDs where mapping.child < 3 {
            throw ShimError(.internalError, "cannot map fd \(mapping.parent) to reserved child fd \(mapping.child)")
        }
        // Child fds must be exactly 3…highest: everything above is closed in the
        // child, and a gap could let an inherited (non-CLOEXEC) fd through.
        guard Set(spec.inheritedFDs.map(\.child)) == Set((3...max(highestChild, 3)).map { $0 }) || spec.inheritedFDs.isEmpty else {
            throw ShimError(.internalError, "child fds \(spec.inheritedFDs.map(\.child)) are not contiguous from 3")
        }
        // Move every source fd above the child range first so one dup2 cannot
        // clobber another source (e.g. parent fd 4 → child 3 and parent 3 → child 4).
        var staged: [(parent: Int32, child: Int32)] = []
        defer { for item in staged { close(item.parent) } }
        for mapping in spec.inheritedFDs {
            let copy = fcntl(mapping.parent, F_DUPFD_CLOEXEC, highestChild + 1)
            guard copy >= 0 else { throw ShimError.system("cannot duplicate fd \(mapping.parent) for QEMU") }
            staged.append((copy, mapping.child))
        }
        let output = fcntl(spec.outputFD, F_DUPFD_CLOEXEC, highestChild + 1)
        guard output >= 0 else { throw ShimError.system("cannot duplicate the log fd for QEMU") }
        defer { close(output) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output, 1)
        posix_spawn_file_actions_adddup2(&actions, output, 2)
        for item in staged {
            // dup2 clears FD_CLOEXEC on the target.
            posix_spawn_file_actions_adddup2(&actions, item.parent, item.child)
        }
        cshim_spawn_addclosefrom(&actions, highestChild + 1)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        // The shim blocks or ignores signals (SIGPIPE, SIGTERM handling); QEMU
        // must start with defaults and nothing blocked.
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        var flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if spec.newSession { flags |= cshim_spawn_flag_setsid() }
        posix_spawnattr_setflags(&attributes, flags)

        var argv: [UnsafeMutablePointer<CChar>?] = spec.arguments.map { strdup($0) } + [nil]
        var envp: [UnsafeMutablePointer<CChar>?] = spec.environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        // QEMU runs with no capabilities, cannot gain any, and optionally as
        // another user, as libvirt runs it. Those are per-thread in the
        // kernel, so a fresh thread confines itself and spawns; the shim's
        // threads keep their own.
        let groups = spec.runAs?.groups ?? []
        var pid: pid_t = 0
        var failedStep: UnsafePointer<CChar>?
        // Registered as the shim's own child before any orphan reaper can look.
        var rc: Int32 = 0
        let cpus = (spec.cpuAffinity ?? []).map { Int32($0) }
        groups.withUnsafeBufferPointer { groupList in
            cpus.withUnsafeBufferPointer { cpuList in
                var confinement = cshim_confinement(
                    drop_privileges: spec.dropPrivileges ? 1 : 0, set_ids: spec.runAs == nil ? 0 : 1,
                    uid: spec.runAs?.uid ?? 0, gid: spec.runAs?.gid ?? 0, groups: groupList.baseAddress,
                    group_count: groupList.count, cpus: cpuList.baseAddress, cpu_count: cpuList.count)
                OwnChildren.spawn {
                    rc = cshim_spawn_confined(&pid, spec.executable, &actions, &attributes, &argv, &envp, &confinement, &failedStep)
                    return rc == 0 ? pid : nil
                }
            }
        }
        guard rc == 0 else {
            if let failedStep {
                throw ShimError(
                    .system, "cannot confine \(spec.executable) before starting it: \(String(cString: failedStep)): \(SystemError(rc))",
                    cause: SystemError(rc))
            }
            throw ShimError(
                .qemuFailed, "cannot start \(spec.executable): \(SystemError(rc))", cause: SystemError(rc))
        }
        let pidfd = cshim_pidfd_open(pid)
        guard pidfd >= 0 else {
            let error = ShimError.system("pidfd_open(\(pid)) for \(spec.executable)")
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            throw error
        }
        _ = fcntl(pidfd, F_SETFD, FD_CLOEXEC)
        return SpawnedProcess(pid: pid, pidfd: pidfd)
    }
}
