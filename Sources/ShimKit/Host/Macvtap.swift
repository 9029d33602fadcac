import CShimKit

#if canImport(Glibc)
import Glibc
#endif

/// macvtap links for `<interface type='direct'>`, made as libvirt makes
/// them: a macvtap on the host device in the XML's macvlan mode, carrying
/// the guest's own MAC, up, its character device opened for QEMU. Unlike a
/// tap, the link outlives QEMU, so the shim deletes it when the VM ends.
public enum Macvtap {
    /// Creates the link (the XML's name, or the first free `macvtapN`) and
    /// opens it; on failure nothing is left behind.
    public static func create(
        device: String, mode: String, guestMAC: String, name: String?, mtu: Int?, vnetHeader: Bool, alias: String
    ) throws -> Tap.Opened {
        let lower = if_nametoindex(device)
        guard lower != 0 else {
            throw ShimError(
                .notFound, "interface '\(alias)': host device '\(device)' in <source dev> does not exist; name one from 'ip link'")
        }
        let modes: [String: UInt32] = ["private": 1, "vepa": 2, "bridge": 4, "passthrough": 8]
        let mac = guestMAC.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard mac.count == 6, let value = modes[mode] else {
            throw ShimError(.internalError, "interface '\(alias)': macvtap mode '\(mode)' or MAC '\(guestMAC)' unusable")
        }
        var created: String?
        var candidates = name.map { [$0] } ?? (0..<256).map { "macvtap\($0)" }.filter { !FileIO.exists("/sys/class/net/\($0)") }
        while created == nil, !candidates.isEmpty {
            let candidate = candidates.removeFirst()
            if cshim_macvtap_create(candidate, Int32(lower), value, mac) == 0 {
                created = candidate
            } else if errno != EEXIST || name != nil {
                let code = errno
                let hint = code == EPERM ? " (needs CAP_NET_ADMIN)" : code == EOPNOTSUPP ? " (the kernel has no macvtap)" : ""
                throw ShimError.system("interface '\(alias)': cannot create macvtap '\(candidate)' on '\(device)'\(hint)", errno: code)
            }
        }
        guard let link = created else {
            throw ShimError(.unavailable, "interface '\(alias)': no free macvtap name (macvtap0 to macvtap255 are taken)")
        }
        do {
            if let mtu, cshim_link_set_mtu(link, Int32(mtu)) != 0 {
                throw ShimError.system("cannot set MTU \(mtu) on macvtap \(link)")
            }
            guard cshim_link_set_up(link) == 0 else { throw ShimError.system("cannot bring macvtap \(link) up") }
            let fd = cshim_macvtap_open(link, vnetHeader ? 1 : 0)
            guard fd >= 0 else { throw ShimError.system("interface '\(alias)': cannot open the character device of macvtap \(link)") }
            return Tap.Opened(fd: fd, name: link)
        } catch {
            remove(link)
            throw error
        }
    }

    /// Deletes a macvtap link and the device node vmshim may have made for it.
    public static func remove(_ name: String) {
        let index = if_nametoindex(name)
        _ = cshim_link_delete(name)
        if index != 0 { FileIO.remove("/dev/tap\(index)") }
    }

    /// The macvtap links a live definition records (`<interface
    /// type='direct'>` with its `<target dev>` and `<mac>`).
    public static func links(inLiveXML xml: String) -> [(name: String, mac: String)] {
        guard !xml.isEmpty, let root = try? XMLTree.parse(xml, file: "live definition") else { return [] }
        return root.firstElement(named: "devices")?.elements(named: "interface").compactMap { nic in
            guard nic.attribute("type") == "direct", let name = nic.firstElement(named: "target")?.attribute("dev"),
                let mac = nic.firstElement(named: "mac")?.attribute("address")
            else { return nil }
            return (name, mac.lowercased())
        } ?? []
    }

    /// Deletes the links a dead run left (its QEMU is gone), but only a link
    /// that still carries that run's guest MAC: the name may since have gone
    /// to another VM's macvtap.
    public static func removeStale(inLiveXML xml: String) {
        for link in links(inLiveXML: xml) {
            let address = ((try? FileIO.readStringIfPresent("/sys/class/net/\(link.name)/address")) ?? nil)?.trimmingWhitespace()
            if address?.lowercased() == link.mac { remove(link.name) }
        }
    }
}
