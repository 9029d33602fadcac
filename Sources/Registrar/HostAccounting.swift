import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// The host's capacity and what the domains commit of it.
enum HostAccounting {
    struct Capacity: Sendable {
        var cpus: UInt32
        var memoryTotalKiB: UInt64

        static func current() -> Capacity {
            Capacity(cpus: UInt32(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))), memoryTotalKiB: memTotalKiB())
        }

        static func memTotalKiB() -> UInt64 {
            guard let text = try? FileIO.readString("/proc/meminfo"),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") })
            else { return 0 }
            return line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        }
    }

    /// States whose QEMU holds its vCPUs and memory.
    static func commits(_ state: WireState) -> Bool {
        switch state {
        case .starting, .running, .paused, .shuttingDown, .unreachable: return true
        default: return false
        }
    }

    static func compute(_ domains: [Domain], host: Capacity) -> Vmshim_Registrar_V1_HostAccounting {
        var result = Vmshim_Registrar_V1_HostAccounting()
        result.cpus = host.cpus
        result.memoryTotalKib = host.memoryTotalKiB
        result.domains = UInt32(domains.count)
        // Figures come from shims: sums saturate instead of trapping.
        func add<T: FixedWidthInteger>(_ sum: inout T, _ value: T) {
            let (total, overflow) = sum.addingReportingOverflow(value)
            sum = overflow ? .max : total
        }
        for domain in domains where commits(domain.status.state) {
            add(&result.committedVcpus, domain.identity.vcpus)
            add(&result.committedMemoryKib, domain.identity.memoryKib)
            add(&result.qemuRssKib, domain.resources.qemuRssKib)
            add(&result.shimRssKib, domain.resources.shimRssKib)
        }
        result.vcpuOvercommit = host.cpus == 0 ? 0 : Double(result.committedVcpus) / Double(host.cpus)
        result.memoryOvercommit =
            host.memoryTotalKiB == 0 ? 0 : Double(result.committedMemoryKib) / Double(host.memoryTotalKiB)
        return result
    }
}
