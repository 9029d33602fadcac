import CShimKit
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `<interface type='network'>` on libvirt's virtual networks, shared with
/// libvirt's own guests: vmshim asks libvirt's network service for a port,
/// as libvirt's QEMU driver does (virNetworkPortCreateXML), so the NIC shows
/// in `virsh net-port-list`, and joins the bridge the port names. The port
/// is deleted when the VM ends; ports a dead run of the same domain left
/// behind are deleted before a new start.
///
/// Networks whose ports are bridges (forward mode nat, route, open, none,
/// or bridge with a host bridge) are supported; macvtap and hostdev ports
/// are refused. libvirt is loaded when such an interface exists.
public enum LibvirtNetworks {
    /// libvirt's network service: libvirtd or virtnetworkd.
    public static let uri = "network:///system"

    /// A port vmshim holds on a network.
    public struct Port: Sendable, Equatable {
        public var network: String
        public var uuid: String
    }

    /// What a network gives an interface.
    struct Attachment: Equatable {
        var port: Port
        var bridge: String
    }

    /// Allocates a port for every type='network' interface and fills in its
    /// bridge and port id (the tap takes the bridge's MTU unless the XML sets
    /// one, and the guest is not told the network's: libvirt 9.0's way). On any
    /// failure the ports already taken are deleted before the error is thrown.
    public static func attach(_ spec: DomainSpec, file: String) throws -> (DomainSpec, [Port]) {
        var spec = spec
        guard spec.devices.interfaces.contains(where: { $0.kind == .network }) else { return (spec, []) }
        let connection = try Connection.open(purpose: "interface type='network' in \(file)")
        var taken: [Port] = []
        do {
            var swept: Set<String> = []
            for index in spec.devices.interfaces.indices where spec.devices.interfaces[index].kind == .network {
                let nic = spec.devices.interfaces[index]
                guard let name = nic.network else { continue }
                let network = try connection.network(name, interface: nic.alias, file: file)
                if swept.insert(name).inserted {
                    try network.deletePorts(ownedBy: spec.name, uuid: spec.uuid.description)
                }
                let attachment = try network.allocatePort(domain: spec.name, uuid: spec.uuid.description, mac: nic.mac, interface: nic.alias)
                taken.append(attachment.port)
                spec.devices.interfaces[index].bridge = attachment.bridge
                spec.devices.interfaces[index].networkPortID = attachment.port.uuid
            }
        } catch {
            connection.delete(taken)
            throw error
        }
        return (spec, taken)
    }

    /// The ports a live definition records (`<source network portid>`), so
    /// the ports of a QEMU that died with its shim can be given back.
    public static func ports(inLiveXML xml: String) -> [Port] {
        guard !xml.isEmpty, let root = try? XMLTree.parse(xml, file: "live definition") else { return [] }
        return root.firstElement(named: "devices")?.elements(named: "interface").compactMap { nic in
            guard nic.attribute("type") == "network", let source = nic.firstElement(named: "source"),
                let network = source.attribute("network"), let port = source.attribute("portid")
            else { return nil }
            return Port(network: network, uuid: port)
        } ?? []
    }

    /// Deletes ports; returns what could not be deleted, for the log.
    public static func release(_ ports: [Port]) -> [String] {
        guard !ports.isEmpty else { return [] }
        do {
            let connection = try Connection.open(purpose: "releasing network ports")
            return connection.delete(ports)
        } catch {
            return ports.map { "port \($0.uuid) on network '\($0.network)': \(error)" }
        }
    }

    // MARK: - libvirt

    /// One connection; libvirt's calls block, so callers run off the cooperative pool.
    final class Connection {
        let api: cshim_libvirt
        let handle: UnsafeMutableRawPointer

        private init(api: cshim_libvirt, handle: UnsafeMutableRawPointer) {
            self.api = api
            self.handle = handle
        }

        deinit { _ = api.connect_close(handle) }

        static let library: Mutex<cshim_libvirt?> = Mutex(nil)

        static func open(purpose: String) throws -> Connection {
            let api = try library.withLock { loaded -> cshim_libvirt in
                if let loaded { return loaded }
                var api = cshim_libvirt()
                var error = [CChar](repeating: 0, count: 512)
                guard cshim_libvirt_load(&api, &error, error.count) == 0 else {
                    throw ShimError(
                        .unavailable,
                        "\(purpose): cannot load libvirt's client library (\(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))); install libvirt0")
                }
                loaded = api
                return api
            }
            guard let handle = api.connect_open(LibvirtNetworks.uri) else {
                throw ShimError(
                    .unavailable,
                    "\(purpose): cannot reach libvirt's network service at \(LibvirtNetworks.uri): \(lastError(api)); start libvirtd (or virtnetworkd)")
            }
            return Connection(api: api, handle: handle)
        }

        static func lastError(_ api: cshim_libvirt) -> String {
            api.last_error_message().map { String(cString: $0) } ?? "unknown error"
        }

        func network(_ name: String, interface: String, file: String) throws -> Network {
            guard let network = api.network_lookup_by_name(handle, name) else {
                throw ShimError(
                    .notFound,
                    "\(file): interface '\(interface)' names libvirt network '\(name)', which does not exist (\(Self.lastError(api))); see 'virsh net-list --all'")
            }
            let wrapped = Network(connection: self, handle: network, name: name)
            guard api.network_is_active(network) == 1 else {
                throw ShimError(
                    .unavailable,
                    "\(file): interface '\(interface)' uses libvirt network '\(name)', which is not active; start it with 'virsh net-start \(name)'")
            }
            return wrapped
        }

        @discardableResult
        func delete(_ ports: [Port]) -> [String] {
            var failures: [String] = []
            for port in ports {
                guard let network = api.network_lookup_by_name(handle, port.network) else {
                    failures.append("port \(port.uuid): network '\(port.network)' is gone (\(Self.lastError(api)))")
                    continue
                }
                defer { _ = api.network_free(network) }
                guard let found = api.network_port_lookup_by_uuid_string(network, port.uuid) else { continue }  // already gone
                if api.network_port_delete(found, 0) != 0 {
                    failures.append("port \(port.uuid) on network '\(port.network)': \(Self.lastError(api))")
                }
                _ = api.network_port_free(found)
            }
            return failures
        }
    }

    final class Network {
        let connection: Connection
        let handle: UnsafeMutableRawPointer
        let name: String
        var api: cshim_libvirt { connection.api }

        init(connection: Connection, handle: UnsafeMutableRawPointer, name: String) {
            self.connection = connection
            self.handle = handle
            self.name = name
        }

        deinit { _ = api.network_free(handle) }

        func xml(_ text: UnsafeMutablePointer<CChar>?, what: String) throws -> XMLElement {
            guard let text else {
                throw ShimError(.unavailable, "libvirt network '\(name)': cannot read \(what): \(Connection.lastError(api))")
            }
            defer { cshim_libvirt_free(text) }
            return try XMLTree.parse(String(cString: text), file: "libvirt network '\(name)' \(what)")
        }

        /// Ports a previous run of this domain left behind (its shim died
        /// with the VM): no live QEMU of vmshim's holds them, since the
        /// domain's UUID is checked to be unused before a start; the owner's
        /// name must match too, so a libvirt guest sharing only the UUID keeps its ports.
        func deletePorts(ownedBy domain: String, uuid: String) throws {
            var list: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
            let count = api.network_list_all_ports(handle, &list, 0)
            guard count >= 0, let list else { return }
            defer { cshim_libvirt_free(list) }
            for index in 0..<Int(count) {
                guard let port = list[index] else { continue }
                defer { _ = api.network_port_free(port) }
                guard let xml = try? xml(api.network_port_get_xml_desc(port, 0), what: "port"),
                    let owner = xml.firstElement(named: "owner"),
                    owner.firstElement(named: "uuid")?.text.trimmingWhitespace() == uuid,
                    owner.firstElement(named: "name")?.text.trimmingWhitespace() == domain
                else { continue }
                _ = api.network_port_delete(port, 0)
            }
        }

        func allocatePort(domain: String, uuid: String, mac: String, interface: String) throws -> Attachment {
            let request = XMLElement(name: "networkport")
            _ = request.appendChild(XMLElement(name: "uuid", text: DomainUUID.random().description))
            let owner = request.appendChild(XMLElement(name: "owner"))
            _ = owner.appendChild(XMLElement(name: "name", text: domain))
            _ = owner.appendChild(XMLElement(name: "uuid", text: uuid))
            _ = request.appendChild(XMLElement(name: "mac", attributes: [("address", mac)]))
            guard let port = api.network_port_create_xml(handle, request.xmlString(), 0) else {
                throw ShimError(
                    .unavailable,
                    "interface '\(interface)': libvirt network '\(name)' gave no port: \(Connection.lastError(api))")
            }
            defer { _ = api.network_port_free(port) }
            let described = try xml(api.network_port_get_xml_desc(port, 0), what: "port")
            let portUUID = described.firstElement(named: "uuid")?.text.trimmingWhitespace() ?? ""
            let plug = described.firstElement(named: "plug")
            let type = plug?.attribute("type") ?? "none"
            guard type == "network" || type == "bridge", let bridge = plug?.attribute("bridge"), !bridge.isEmpty, !portUUID.isEmpty else {
                _ = api.network_port_delete(port, 0)
                throw ShimError(
                    .unsupported,
                    "interface '\(interface)': libvirt network '\(name)' gives '\(type)' ports (macvtap or host devices); vmshim supports networks whose ports are bridges (forward mode nat, route, open, none, or bridge with <bridge name>)")
            }
            return Attachment(port: Port(network: name, uuid: portUUID), bridge: bridge)
        }
    }
}
