#if canImport(Glibc)
import Glibc
#endif

/// The host's huge pages, for `<memoryBacking><hugepages>`: which hugetlbfs
/// mounts exist (QEMU maps guest RAM from a file there, as libvirt has it
/// do), how many pages are free, and the per-domain directory QEMU creates
/// its unlinked backing files in.
public enum Hugepages {
    public struct Mount: Sendable, Equatable {
        public var path: String
        public var pageSizeKiB: UInt64
        public init(path: String, pageSizeKiB: UInt64) {
            self.path = path
            self.pageSizeKiB = pageSizeKiB
        }
    }

    /// hugetlbfs mounts from /proc/mounts; a mount without `pagesize=` has
    /// the default huge page size.
    public static func mounts() -> [Mount] {
        guard let text = try? FileIO.readStringIfPresent("/proc/mounts") else { return [] }
        return parseMounts(text, defaultPageSizeKiB: defaultPageSizeKiB())
    }

    static func parseMounts(_ text: String, defaultPageSizeKiB: UInt64?) -> [Mount] {
        text.split(separator: "\n").compactMap { line -> Mount? in
            let fields = line.split(separator: " ")
            guard fields.count >= 4, fields[2] == "hugetlbfs" else { return nil }
            // /proc/mounts escapes spaces and such as \040.
            let path = String(fields[1]).replacingAll("\\040", with: " ")
            var size = defaultPageSizeKiB
            for option in fields[3].split(separator: ",") where option.hasPrefix("pagesize=") {
                size = parseSize(String(option.dropFirst("pagesize=".count)))
            }
            guard let size else { return nil }
            return Mount(path: path, pageSizeKiB: size)
        }
    }

    /// `2M`, `1G`, `2048k` as the kernel prints page sizes, in KiB.
    static func parseSize(_ text: String) -> UInt64? {
        guard let last = text.last else { return nil }
        let multiplier: UInt64
        switch last {
        case "k", "K": multiplier = 1
        case "M": multiplier = 1024
        case "G": multiplier = 1024 * 1024
        default: return UInt64(text).map { $0 / 1024 }
        }
        return UInt64(text.dropLast()).map { $0 * multiplier }
    }

    /// `Hugepagesize:` from /proc/meminfo.
    public static func defaultPageSizeKiB() -> UInt64? {
        guard let text = try? FileIO.readStringIfPresent("/proc/meminfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Hugepagesize:") {
            return line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
        }
        return nil
    }

    /// Free pages of one size, from sysfs (nil when the size does not exist).
    public static func freePages(sizeKiB: UInt64) -> UInt64? {
        let path = "/sys/kernel/mm/hugepages/hugepages-\(sizeKiB)kB/free_hugepages"
        return (try? FileIO.readStringIfPresent(path)).flatMap { $0 }.flatMap { UInt64($0.trimmingWhitespace()) }
    }

    /// Before QEMU starts: enough free pages for the guest, a clear error
    /// instead of QEMU's "cannot allocate memory". (The directory for the
    /// backing files is in the launch plan's directories.)
    public static func checkFreePages(domain: String, sizeKiB: UInt64, guestKiB: UInt64) throws {
        let needed = (guestKiB + sizeKiB - 1) / sizeKiB
        guard let free = freePages(sizeKiB: sizeKiB) else {
            throw ShimError(
                .unavailable,
                "domain '\(domain)': <hugepages> asks for \(sizeKiB) KiB pages, which the host does not have (/sys/kernel/mm/hugepages/hugepages-\(sizeKiB)kB); use a size it has")
        }
        guard free >= needed else {
            throw ShimError(
                .unavailable,
                "domain '\(domain)': the guest needs \(needed) free \(sizeKiB) KiB huge pages, the host has \(free) free; raise /sys/kernel/mm/hugepages/hugepages-\(sizeKiB)kB/nr_hugepages (or vm.nr_hugepages)")
        }
    }

    /// After QEMU: its backing files were unlinked, the directory is empty.
    public static func removeDirectory(_ directory: String?) {
        guard let directory else { return }
        _ = rmdir(directory)
    }
}
