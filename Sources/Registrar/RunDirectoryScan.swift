import ShimKit

/// Finds domains in the run roots the registrar is told about
/// (`--run-root`), for shims that run but have not registered (yet): after a
/// registrar restart, or a shim started with `--registrar none`.
enum RunDirectoryScan {
    struct Found: Sendable {
        var domain: Domain
    }

    /// `skipping`: UUIDs the registrar knows already (their live XML is not parsed).
    static func scan(roots: [String], skipping known: Set<String> = []) -> [Found] {
        roots.flatMap { root in
            DomainDirectory(root: root).entries().compactMap { entry -> Found? in
                guard let status = entry.status, entry.shimAlive || entry.qemuAlive,
                    let uuid = DomainUUID(status.uuid), !known.contains(uuid.description)
                else { return nil }
                var domain = Domain()
                domain.identity.uuid = uuid.description
                domain.identity.name = status.name
                domain.identity.shimPid = status.shim.pid
                domain.identity.shimVersion = status.shimVersion
                domain.identity.runDirectory = entry.runDirectory.path
                domain.identity.controlSocket = status.controlSocket
                domain.identity.readOnlyControlSocket = entry.runDirectory.readOnlyControlSocket
                domain.identity.statusFile = entry.runDirectory.statusFile
                domain.identity.logFile = status.logFile
                domain.identity.qemuBinary = status.qemuBinary
                domain.identity.qemuVersion = status.qemuVersion ?? ""
                domain.identity.cgroup = status.cgroupDirectories.first ?? ""
                if let spec = try? DomainParser(file: entry.runDirectory.statusFile).parse(status.liveXML).spec {
                    domain.identity.vcpusMax = UInt32(clamping: spec.vcpus.maximum)
                    domain.identity.vcpus = UInt32(clamping: spec.vcpus.current)
                    domain.identity.memoryKib = spec.memory.currentKiB
                    domain.identity.maxMemoryKib = spec.memory.totalKiB
                }
                domain.status.state = entry.shimAlive ? RegistrationWire.state(status.state) : .unreachable
                domain.status.reason = entry.shimAlive ? status.reason : "QEMU runs without a shim"
                domain.status.qemuPid = status.qemu?.pid ?? 0
                domain.status.qemuStartTime = status.qemu?.startTime ?? 0
                domain.status.startedAtUnix = status.startedAt
                return Found(domain: domain)
            }
        }
    }
}

extension RunDirectoryScan {
    /// A record brought up to date from its shim's status file, which the
    /// shim writes before anything else learns of a change: a registrar
    /// killed right after a state change may not have written it yet.
    static func refreshed(_ record: RecordStore.Record) -> RecordStore.Record {
        let path = record.domain.identity.statusFile
        guard !path.isEmpty, let status = try? StatusFile.read(from: path),
            status.uuid == record.domain.identity.uuid, let qemu = status.qemu, qemu.bootID == record.bootID
        else { return record }
        var record = record
        record.domain.status.state = RegistrationWire.state(status.state)
        record.domain.status.reason = status.reason
        record.domain.status.qemuPid = qemu.pid
        record.domain.status.qemuStartTime = qemu.startTime
        return record
    }
}
