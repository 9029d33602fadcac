/// The USB ports of a domain's controller and its hubs, as libvirt's USB
/// address set tracks them (virDomainUSBAddressSet): explicit ports are
/// reserved, free ones handed out the way virDomainUSBAddressFindFreePort
/// finds them.
final class USBPortTree {
    /// A usb-hub's ports (VIR_DOMAIN_USB_HUB_PORTS).
    static let hubPorts = 8

    final class Hub {
        var taken: [Bool]
        var hubs: [Int: Hub] = [:]
        init(ports: Int) { taken = Array(repeating: false, count: ports) }
    }

    let root: Hub
    let model: String

    init(rootPorts: Int, model: String) {
        root = Hub(ports: rootPorts)
        self.model = model
    }

    /// Takes an explicit port like `2` or `1.3`; nil, or what is wrong.
    func reserve(_ port: String, isHub: Bool) -> String? {
        let path = port.split(separator: ".").compactMap { Int($0) }
        guard !path.isEmpty, path.count == port.split(separator: ".", omittingEmptySubsequences: false).count else {
            return "USB port '\(port)' must be like 1 or 1.2"
        }
        var node = root
        for (depth, number) in path.dropLast().enumerated() {
            guard let hub = node.hubs[number - 1] else {
                let prefix = path.prefix(depth + 1).map(String.init).joined(separator: ".")
                return "there is no hub at port \(prefix) in USB address port \(port); give the hub that port or leave the address out"
            }
            node = hub
        }
        guard let last = path.last, last >= 1, last <= node.taken.count else {
            let owner = node === root ? "the \(model) controller" : "a USB hub"
            return "USB port \(port) does not exist: \(owner) has \(node.taken.count)"
        }
        guard !node.taken[last - 1] else { return "two USB devices use port \(port)" }
        node.taken[last - 1] = true
        if isHub { node.hubs[last - 1] = Hub(ports: Self.hubPorts) }
        return nil
    }

    /// The first free port: on the controller, else on its hubs in port
    /// order, depth first; taken before it is returned.
    func takeFirstFree(isHub: Bool) -> String? {
        guard let path = Self.firstFree(root, prefix: []) else { return nil }
        let port = path.map(String.init).joined(separator: ".")
        _ = reserve(port, isHub: isHub)
        return port
    }

    private static func firstFree(_ hub: Hub, prefix: [Int]) -> [Int]? {
        if let index = hub.taken.firstIndex(of: false) { return prefix + [index + 1] }
        for index in hub.taken.indices {
            guard let child = hub.hubs[index] else { continue }
            if let found = firstFree(child, prefix: prefix + [index + 1]) { return found }
        }
        return nil
    }
}
