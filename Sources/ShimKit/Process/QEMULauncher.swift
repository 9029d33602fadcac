#if canImport(Glibc)
import Glibc
#endif

/// Opens what a `LaunchPlan` asks for, spawns QEMU with exactly those fds, and
/// closes the shim's copies. On any failure everything opened is closed and
/// every socket file created is removed before the error is thrown.
public enum QEMULauncher {
    public struct Launched: Sendable {
        public var process: ProcessHandle
        public var identity: ProcessIdentity
        /// Tap device names by NIC alias (what the kernel assigned for vnet%d).
        public var tapNames: [String: String]
        /// Socket files the shim created for QEMU (removed when the VM ends).
        public var createdSockets: [String]
        /// macvtap links the shim created (deleted when the VM ends).
        public var macvtapLinks: [String] = []
    }

    /// `incoming` is the restore stream's fd; the launcher takes it over
    /// (it is closed here, QEMU keeps its copy).
    public static func launch(
        plan: LaunchPlan, spec: DomainSpec, logFile: String, shimVersion: String, incoming: Int32? = nil,
        runAs: ProcessCredentials? = nil
    ) throws -> Launched {
        var opened: [(parent: Int32, child: Int32)] = []
        var incoming = incoming
        defer { if let incoming { close(incoming) } }
        var createdSockets: [String] = []
        var tapNames: [String: String] = [:]
        var macvtapLinks: [String] = []
        var succeeded = false
        let backing = spec.memoryBacking
        defer {
            for item in opened { close(item.parent) }
            if !succeeded {
                for path in createdSockets { unlink(path) }
                for link in macvtapLinks { Macvtap.remove(link) }
                for directory in plan.directories { FileIO.removeTree(directory) }
            }
        }
        for directory in plan.directories {
            try FileIO.makeDirectories(directory, mode: 0o700)
            if let runAs, chown(directory, runAs.uid, runAs.gid) != 0 {
                throw ShimError.system("cannot give \(directory) to QEMU's user \(runAs.uid)")
            }
        }
        if backing.hugepages, let size = backing.hugepageSizeKiB {
            try Hugepages.checkFreePages(domain: spec.name, sizeKiB: size, guestKiB: spec.memory.totalKiB)
        }
        for request in plan.fds {
            switch request.resource {
            case .monitorListener(let path), .unixListener(let path):
                let fd = try UnixSocket.listen(path: path)
                createdSockets.append(path)
                opened.append((fd, request.childFD))
            case .file(let path, let append):
                let flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | (append ? O_APPEND : O_TRUNC)
                let fd = open(path, flags, 0o600)
                guard fd >= 0 else { throw ShimError.system("cannot open \(path) for a character device") }
                opened.append((fd, request.childFD))
            case .tap(let name, let vnetHeader, let managed, let alias, let multiQueue):
                let nic = spec.devices.interfaces.first { $0.alias == alias }
                let tap = try Tap.open(
                    name: name, managed: managed, vnetHeader: vnetHeader, guestMAC: nic?.mac ?? "", mtu: nic?.mtu,
                    bridge: nic?.bridge, alias: alias, multiQueue: multiQueue)
                tapNames[alias] = tap.name
                opened.append((tap.fd, request.childFD))
            case .tapQueue(let alias, let vnetHeader):
                guard let name = tapNames[alias] else {
                    throw ShimError(.internalError, "the plan asks for another queue of interface '\(alias)' before its tap")
                }
                opened.append((try Tap.openQueue(name: name, vnetHeader: vnetHeader, alias: alias), request.childFD))
            case .macvtap(let alias, let vnetHeader):
                guard let nic = spec.devices.interfaces.first(where: { $0.alias == alias }), let device = nic.directDevice else {
                    throw ShimError(.internalError, "the plan asks for a macvtap for interface '\(alias)', which has no <source dev>")
                }
                let link = try Macvtap.create(
                    device: device, mode: nic.directMode, guestMAC: nic.mac, name: nic.targetDev, mtu: nic.mtu,
                    vnetHeader: vnetHeader, alias: alias)
                macvtapLinks.append(link.name)
                tapNames[alias] = link.name
                opened.append((link.fd, request.childFD))
            case .incomingMigration:
                guard let fd = incoming else {
                    throw ShimError(.internalError, "the plan restores saved state but no stream was opened")
                }
                incoming = nil
                opened.append((fd, request.childFD))
            }
        }

        if let cpus = spec.vcpus.cpusetCPUs,
            let online = ProcFS.onlineCPUs(),
            Set(cpus).isDisjoint(with: online)
        {
            throw ShimError(
                .invalidArgument,
                "<vcpu cpuset='\(spec.vcpus.cpuset ?? "")'> names no online host CPU (online: \(online.map(String.init).joined(separator: ",")))")
        }
        try FileIO.makeDirectories(FileIO.parentDirectory(of: logFile), mode: 0o755)
        let logFD = open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard logFD >= 0 else { throw ShimError.system("cannot open the QEMU log \(logFile)") }
        defer { close(logFD) }
        let header = "\(QEMUOption.isoDate(Int64(time(nil)))) starting up vmshim \(shimVersion), domain \(spec.name) (\(spec.uuid))\n"
        try? FileIO.writeAll(logFD, Array((header + plan.rendered()).utf8), path: logFile)

        let spawned = try Spawner.spawn(
            SpawnSpec(
                executable: plan.executable, arguments: plan.argv, environment: plan.environment, outputFD: logFD,
                inheritedFDs: opened, dropPrivileges: true, runAs: runAs,
                cpuAffinity: spec.pinning.emulator ?? spec.vcpus.cpusetCPUs))
        let process = ProcessHandle(spawned)
        guard let identity = ProcessIdentity.of(pid: spawned.pid) else {
            // Already gone: QEMU failed at once. The caller reports its log.
            succeeded = true
            return Launched(
                process: process, identity: ProcessIdentity(pid: spawned.pid, startTime: 0, bootID: ProcFS.bootID),
                tapNames: tapNames, createdSockets: createdSockets, macvtapLinks: macvtapLinks)
        }
        succeeded = true
        return Launched(
            process: process, identity: identity, tapNames: tapNames, createdSockets: createdSockets, macvtapLinks: macvtapLinks)
    }
}
