#if canImport(Glibc)
import Glibc
#endif

/// Facts about a process read from /proc, to tell "the same process" from "a
/// process that reused the pid".
public struct ProcessIdentity: Sendable, Codable, Equatable {
    public var pid: Int32
    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
    public var startTime: UInt64
    /// /proc/sys/kernel/random/boot_id, so a persistent run root is not fooled
    /// across reboots.
    public var bootID: String

    public init(pid: Int32, startTime: UInt64, bootID: String) {
        self.pid = pid
        self.startTime = startTime
        self.bootID = bootID
    }

    /// The identity of a live process, or nil when it does not exist.
    public static func of(pid: Int32) -> ProcessIdentity? {
        guard let startTime = ProcFS.startTime(pid: pid) else { return nil }
        return ProcessIdentity(pid: pid, startTime: startTime, bootID: ProcFS.bootID)
    }

    /// True when the process recorded here is still the one running under that pid.
    public var isAlive: Bool {
        guard bootID == ProcFS.bootID, let now = ProcFS.startTime(pid: pid) else { return false }
        return now == startTime && !ProcFS.isZombie(pid: pid)
    }
}

public enum ProcFS {
    public static let bootID: String = {
        (try? FileIO.readString("/proc/sys/kernel/random/boot_id"))?.trimmingWhitespace() ?? ""
    }()

    /// The host CPUs that are online now, nil when sysfs does not say.
    public static func onlineCPUs() -> [Int]? {
        ((try? FileIO.readStringIfPresent("/sys/devices/system/cpu/online")) ?? nil)
            .flatMap { DomainParser.parseCPUSet($0.trimmingWhitespace()) }
    }

    /// The fields after "pid (comm)"; comm may contain spaces and parentheses.
    static func statFields(pid: Int32) -> [Substring]? {
        guard let text = try? FileIO.readString("/proc/\(pid)/stat"),
            let close = text.lastIndex(of: ")")
        else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    public static func startTime(pid: Int32) -> UInt64? {
        // After "pid (comm)", field 3 (state) is index 0, so field 22 is index 19.
        guard let fields = statFields(pid: pid), fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    public static func isZombie(pid: Int32) -> Bool {
        statFields(pid: pid)?.first == "Z"
    }

    /// The process's executable path (readlink /proc/PID/exe), when readable.
    public static func executable(pid: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/\(pid)/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Private_Clean + Private_Dirty (KiB) and Rss/Pss from smaps_rollup.
    public static func memory(pid: Int32) -> (rssKiB: UInt64, pssKiB: UInt64, privateKiB: UInt64)? {
        guard let text = try? FileIO.readString("/proc/\(pid)/smaps_rollup") else { return nil }
        var rss: UInt64 = 0
        var pss: UInt64 = 0
        var privateKiB: UInt64 = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let value = UInt64(parts[1]) else { continue }
            switch parts[0] {
            case "Rss:": rss = value
            case "Pss:": pss = value
            case "Private_Clean:", "Private_Dirty:": privateKiB += value
            default: break
            }
        }
        return (rss, pss, privateKiB)
    }
}
