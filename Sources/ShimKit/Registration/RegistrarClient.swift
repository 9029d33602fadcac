import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// A client for the registrar's queries (`vmshim list`, tests, tools).
public struct RegistrarClient: Sendable {
    public let socketPath: String
    public let timeout: Duration

    public init(socketPath: String, timeout: Duration = .seconds(30)) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    public func with<T: Sendable>(
        _ body: @Sendable (Vmshim_Registrar_V1_Registrar.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        try await UnixSocketGRPC.withClient(
            socketPath: socketPath, missing: "no registrar socket at \(socketPath): is vmshim-registrar running?",
            context: "registrar \(socketPath)"
        ) { client in
            try await body(Vmshim_Registrar_V1_Registrar.Client(wrapping: client))
        }
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        return options
    }

    public func info() async throws -> Vmshim_Registrar_V1_InfoResponse {
        let options = self.options
        return try await with { try await $0.info(.init(), options: options) }
    }

    public func listDomains(
        states: [Vmshim_Registrar_V1_State] = [], nameContains: String = "", withoutResources: Bool = false
    ) async throws -> [Vmshim_Registrar_V1_Domain] {
        var request = Vmshim_Registrar_V1_ListDomainsRequest()
        request.states = states
        request.nameContains = nameContains
        request.withoutResources = withoutResources
        let options = self.options
        return try await with { [request] in try await $0.listDomains(request, options: options).domains }
    }

    public func domain(uuid: String? = nil, name: String? = nil) async throws -> Vmshim_Registrar_V1_Domain {
        var request = Vmshim_Registrar_V1_GetDomainRequest()
        if let uuid { request.uuid = uuid } else if let name { request.name = name }
        let options = self.options
        return try await with { [request] in try await $0.getDomain(request, options: options) }
    }

    public func hostAccounting() async throws -> Vmshim_Registrar_V1_HostAccounting {
        let options = self.options
        return try await with { try await $0.getHostAccounting(.init(), options: options) }
    }

    /// Streams events until `handler` returns false or the registrar stops.
    public func watchEvents(_ handler: @escaping @Sendable (Vmshim_Registrar_V1_Event) async -> Bool) async throws {
        var options = CallOptions.defaults
        options.timeout = nil
        try await with { [options] client in
            try await client.watchEvents(.init(), options: options) { response in
                for try await event in response.messages {
                    if await !handler(event) { break }
                }
            }
        }
    }
}
