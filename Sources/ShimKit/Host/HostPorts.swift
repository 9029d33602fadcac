#if canImport(Glibc)
import Glibc
#endif

/// TCP port helpers for graphics (VNC and SPICE autoport, one range as in libvirt).
public enum HostPorts {
    /// The first port from 5900 that can be bound on `address` and is not
    /// `taken` (by another display of the same domain), as libvirt's port
    /// allocator picks it. (QEMU binds it moments later; the race is the same
    /// one libvirt accepts.)
    @Sendable public static func freeDisplayPort(_ address: String, taken: Set<Int>) throws -> Int {
        for port in 5900...65535 where !taken.contains(port) && canBind(address: address, port: port) {
            return port
        }
        throw ShimError(.unavailable, "no free display port from 5900 on \(address); free one or give <graphics port=…>")
    }

    static func canBind(address: String, port: Int) -> Bool {
        let isIPv6 = address.contains(":")
        let fd = socket(isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if isIPv6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, address, &sa.sin6_addr) == 1 else { return false }
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
            }
        }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
