import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Gathers one domain's accounting figures: memory and CPU of QEMU and of the
/// shim from /proc, the balloon and the disks from QMP queries (which never
/// wait for the VM's operation lock).
public enum ResourceSampler {
    public static func sample(_ supervisor: VMSupervisor) async -> RegistrationWire.Resources {
        let facts = await supervisor.registrationFacts
        var resources = RegistrationWire.Resources()
        resources.sampledAtUnixMicros = RegistrationWire.nowMicros()
        let shim = getpid()
        let qemuRuns = facts.qemuPID > 0 && (facts.state != .starting || facts.reattached) && facts.state != .shutoff
        // smaps_rollup walks QEMU's page tables: off the cooperative pool.
        let figures = try? await NIOThreadPool.singleton.runIfActive {
            () -> (shim: (rssKiB: UInt64, pssKiB: UInt64, privateKiB: UInt64)?, shimCPU: UInt64?,
                qemu: (rssKiB: UInt64, pssKiB: UInt64, privateKiB: UInt64)?, qemuCPU: UInt64?) in
            let qemuIsOurs = qemuRuns && ProcFS.startTime(pid: facts.qemuPID) == facts.qemuStartTime
            return (
                ProcFS.memory(pid: shim), cpuTimeMicros(pid: shim),
                qemuIsOurs ? ProcFS.memory(pid: facts.qemuPID) : nil, qemuIsOurs ? cpuTimeMicros(pid: facts.qemuPID) : nil
            )
        }
        if let memory = figures?.shim {
            resources.shimRssKib = memory.rssKiB
            resources.shimPssKib = memory.pssKiB
        }
        resources.shimCpuTimeMicros = figures?.shimCPU ?? 0
        guard let figures, let memory = figures.qemu else { return resources }
        resources.qemuRssKib = memory.rssKiB
        resources.qemuPssKib = memory.pssKiB
        resources.qemuCpuTimeMicros = figures.qemuCPU ?? 0
        if let balloon = try? await supervisor.query("query-balloon"), let actual = balloon["actual"]?.uint64Value {
            resources.balloonActualKib = actual / 1024
        }
        let blocks = (try? await supervisor.query("query-block"))?.arrayValue ?? []
        let stats = (try? await supervisor.query("query-blockstats"))?.arrayValue ?? []
        resources.disks = facts.disks.map { disk in
            var accounting = Vmshim_Registrar_V1_DiskAccounting()
            accounting.target = disk.target
            accounting.alias = disk.alias
            accounting.source = disk.source
            if let block = blocks.first(where: { belongs($0, to: disk.alias) }), let image = block["inserted"]?["image"] {
                accounting.capacityBytes = image["virtual-size"]?.uint64Value ?? 0
                accounting.allocationBytes = image["actual-size"]?.uint64Value ?? 0
            }
            if let entry = stats.first(where: { belongs($0, to: disk.alias) }), let counters = entry["stats"] {
                accounting.readBytes = counters["rd_bytes"]?.uint64Value ?? 0
                accounting.writeBytes = counters["wr_bytes"]?.uint64Value ?? 0
                accounting.readOps = counters["rd_operations"]?.uint64Value ?? 0
                accounting.writeOps = counters["wr_operations"]?.uint64Value ?? 0
                accounting.flushOps = counters["flush_operations"]?.uint64Value ?? 0
            }
            return accounting
        }
        return resources
    }

    /// query-block/-blockstats name a -blockdev disk by its device's QOM
    /// path ("/machine/peripheral/virtio-disk0/virtio-backend") or id.
    static func belongs(_ entry: JSONValue, to alias: String) -> Bool {
        guard !alias.isEmpty, let qdev = entry["qdev"]?.stringValue else { return false }
        return qdev == alias || qdev.hasPrefix("/machine/peripheral/\(alias)/") || qdev == "/machine/peripheral/\(alias)"
    }

    /// utime + stime (fields 14 and 15 of /proc/PID/stat).
    static func cpuTimeMicros(pid: Int32) -> UInt64? {
        guard let fields = ProcFS.statFields(pid: pid), fields.count > 12,
            let user = UInt64(fields[11]), let system = UInt64(fields[12])
        else { return nil }
        let ticks = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        return (user + system) * 1_000_000 / ticks
    }
}
