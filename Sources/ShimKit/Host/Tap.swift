import CShimKit
#if canImport(Glibc)
import Glibc
#endif

/// Tap devices for `<interface type='ethernet'>`, opened by the shim and
/// passed to QEMU as an fd, as libvirt does.
public enum Tap {
    public struct Opened: Sendable {
        public var fd: Int32
        public var name: String
    }

    /// Managed: creates a tap (named, or the kernel's next vnetN), gives it
    /// the guest MAC with the first byte 0xfe (so a bridge never adopts the
    /// guest's address), an MTU when asked, and brings it up. The tap is not
    /// persistent: it disappears when QEMU, its last user, exits.
    /// Unmanaged: attaches to an existing tap and changes nothing.
    /// With `bridge` (`type='bridge'`), the tap takes the bridge's MTU unless
    /// `mtu` is given, and joins the bridge, as libvirt does; `alias` names
    /// the interface in errors.
    /// With `multiQueue` the tap is opened with IFF_MULTI_QUEUE; `openQueue`
    /// then adds the other queues.
    public static func open(
        name: String?, managed: Bool, vnetHeader: Bool, guestMAC: String, mtu: Int?, bridge: String? = nil,
        alias: String = "", multiQueue: Bool = false
    ) throws -> Opened {
        var mtu = mtu
        if let bridge, mtu == nil {
            let bridgeMTU = cshim_link_get_mtu(bridge)
            guard bridgeMTU > 0 else {
                throw ShimError.system("interface '\(alias)': cannot read bridge '\(bridge)'; create it or name an existing one in <source bridge>")
            }
            mtu = Int(bridgeMTU)
        }
        let size = Int(cshim_ifnamsiz())
        var buffer = [CChar](repeating: 0, count: size)
        let requested = name ?? "vnet%d"
        for (index, byte) in requested.utf8.prefix(size - 1).enumerated() { buffer[index] = CChar(bitPattern: byte) }
        if !managed, name == nil {
            throw ShimError(.invalidArgument, "an unmanaged tap needs a <target dev=…> name")
        }
        let fd = cshim_tap_open(&buffer, vnetHeader ? 1 : 0, multiQueue ? 1 : 0)
        guard fd >= 0 else {
            let code = errno
            let hint =
                code == EPERM ? " (creating tap devices needs CAP_NET_ADMIN)"
                : code == EBUSY ? " (another process holds it)"
                : code == EINVAL && multiQueue ? " (a NIC with <driver queues> needs a multiqueue tap: ip tuntap add dev NAME mode tap multi_queue)"
                : ""
            throw ShimError.system("cannot open tap device '\(requested)'\(hint)", errno: code)
        }
        let actual = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if managed {
            do {
                var mac = guestMAC.split(separator: ":").compactMap { UInt8($0, radix: 16) }
                if mac.count == 6 {
                    mac[0] = 0xFE
                    guard cshim_link_set_mac(actual, mac) == 0 else { throw ShimError.system("cannot set the MAC address of tap \(actual)") }
                }
                if let mtu, cshim_link_set_mtu(actual, Int32(mtu)) != 0 {
                    throw ShimError.system("cannot set MTU \(mtu) on tap \(actual)")
                }
                guard cshim_link_set_up(actual) == 0 else { throw ShimError.system("cannot bring tap \(actual) up") }
                if let bridge, cshim_bridge_add_port(bridge, actual) != 0 {
                    throw ShimError.system("interface '\(alias)': cannot add tap \(actual) to bridge '\(bridge)'")
                }
            } catch {
                close(fd)
                throw error
            }
        }
        return Opened(fd: fd, name: actual)
    }

    /// One more queue of a multiqueue tap `open` already set up.
    public static func openQueue(name: String, vnetHeader: Bool, alias: String) throws -> Int32 {
        let size = Int(cshim_ifnamsiz())
        var buffer = [CChar](repeating: 0, count: size)
        for (index, byte) in name.utf8.prefix(size - 1).enumerated() { buffer[index] = CChar(bitPattern: byte) }
        let fd = cshim_tap_open(&buffer, vnetHeader ? 1 : 0, 1)
        guard fd >= 0 else {
            let code = errno
            let hint = code == EINVAL ? " (it was not created as a multiqueue tap)" : ""
            throw ShimError.system("interface '\(alias)': cannot open another queue of tap \(name)\(hint)", errno: code)
        }
        return fd
    }
}
