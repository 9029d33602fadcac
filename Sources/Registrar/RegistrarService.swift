import GRPCCore
import GRPCProtobuf
import ShimKit

/// vmshim.registrar.v1.Registrar over the registry.
struct RegistrarService: Vmshim_Registrar_V1_Registrar.ServiceProtocol {
    let registry: Registry
    let startedAt: Int64
    /// Set on the read-only socket: Register is refused there.
    var readOnlySocket: String? = nil

    /// ShimErrors leave as RPC errors with their code (ShimError+RPC).
    private func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ShimError {
            throw error.rpcError
        }
    }

    func info(
        request: ServerRequest<Vmshim_Registrar_V1_InfoRequest>, context: ServerContext
    ) async throws -> ServerResponse<Vmshim_Registrar_V1_InfoResponse> {
        var response = Vmshim_Registrar_V1_InfoResponse()
        response.registrarVersion = RegistrarVersion.current
        response.apiVersions = RegistrarVersion.apis
        response.recordVersion = Int32(RecordStore.version)
        response.startedAtUnix = startedAt
        return ServerResponse(message: response)
    }

    func register(
        request: StreamingServerRequest<Vmshim_Registrar_V1_ShimMessage>, context: ServerContext
    ) async throws -> StreamingServerResponse<RegistrarMessage> {
        if let readOnlySocket {
            throw ShimError(
                .permissionDenied,
                "Register is refused on the read-only socket \(readOnlySocket), which serves queries; shims register on the registrar's main socket"
            ).rpcError
        }
        // Stamped by the transport from SO_PEERCRED (PeerAccess), never by the client.
        let peerPID = request.metadata[stringValues: PeerAccess.peerPIDKey].first(where: { _ in true }).flatMap { Int32($0) } ?? 0
        let registry = self.registry
        return StreamingServerResponse { writer in
            let session = await registry.newSession()
            // The stream's own task reads and answers; host requests go
            // down through the outbox (no task per stream for writing: a
            // thousand shims hold a thousand streams).
            let outbox = Outbox { try await writer.write($0) }
            defer { outbox.close() }
            var uuid: String?
            do {
                for try await message in request.messages {
                    switch message.kind {
                    case .snapshot(let snapshot):
                        // One stream, one domain.
                        guard uuid == nil else { throw Self.oneSnapshot }
                        // The registry queues the answer (Registered) in the outbox.
                        _ = try await registry.register(
                            snapshot, session: session, peerPID: peerPID, requests: outbox)
                        uuid = snapshot.identity.uuid.lowercased()
                        await outbox.flush()
                    case .state(let update):
                        guard let uuid else { throw Self.snapshotFirst }
                        await registry.update(update, uuid: uuid, session: session)
                    case .resources(let update):
                        guard let uuid else { throw Self.snapshotFirst }
                        await registry.resources(update.resources, uuid: uuid, session: session)
                    case .result(let result):
                        guard uuid != nil else { throw Self.snapshotFirst }
                        await registry.result(result, session: session)
                    case nil:
                        guard uuid != nil else { throw Self.snapshotFirst }
                    }
                }
            } catch {
                if let uuid { await registry.disconnected(uuid: uuid, session: session) }
                if let shimError = error as? ShimError { throw shimError.rpcError }
                throw error
            }
            if let uuid { await registry.disconnected(uuid: uuid, session: session) }
            return [:]
        }
    }

    static let oneSnapshot = ShimError(
        .invalidArgument, "Register: a stream registers one domain; a second Snapshot is refused (open a new stream)")

    static let snapshotFirst = ShimError(
        .invalidArgument, "Register: the first message must be a Snapshot (registrar.proto)")

    /// Required by the protocol; the server registers CachedListDomainsService
    /// after this service, which answers ListDomains from cached encodings.
    func listDomains(
        request: ServerRequest<Vmshim_Registrar_V1_ListDomainsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Vmshim_Registrar_V1_ListDomainsResponse> {
        var response = Vmshim_Registrar_V1_ListDomainsResponse()
        response.domains = await registry.list(request.message)
        return ServerResponse(message: response)
    }

    func getDomain(
        request: ServerRequest<Vmshim_Registrar_V1_GetDomainRequest>, context: ServerContext
    ) async throws -> ServerResponse<Domain> {
        try await run {
            let key = request.message.key
            let found: Domain?
            switch key {
            case .uuid(let uuid): found = await registry.domain(uuid: uuid, name: nil)
            case .name(let name): found = await registry.domain(uuid: nil, name: name)
            case nil: throw ShimError(.invalidArgument, "GetDomain: give a uuid or a name")
            }
            guard let found else {
                let what: String
                switch key {
                case .uuid(let uuid): what = "uuid \(uuid)"
                case .name(let name): what = "name '\(name)'"
                case nil: what = "that key"
                }
                throw ShimError(.notFound, "the registrar knows no domain with \(what) (see ListDomains)")
            }
            return ServerResponse(message: found)
        }
    }

    func getHostAccounting(
        request: ServerRequest<Vmshim_Registrar_V1_GetHostAccountingRequest>, context: ServerContext
    ) async throws -> ServerResponse<Vmshim_Registrar_V1_HostAccounting> {
        ServerResponse(message: HostAccounting.compute(await registry.allDomains, host: .current()))
    }

    func watchEvents(
        request: ServerRequest<Vmshim_Registrar_V1_WatchEventsRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<Vmshim_Registrar_V1_Event> {
        let events = await registry.subscribe()
        return StreamingServerResponse { writer in
            for await event in events { try await writer.write(event) }
            return [:]
        }
    }
}

/// ListDomains served from each domain's cached wire encoding: the registry
/// encodes a domain once per change, not once per call (with a thousand
/// domains, encoding was a third of a call's time). Registered after
/// RegistrarService, it replaces that service's ListDomains handler.
struct CachedListDomainsService: RegistrableRPCService {
    let registry: Registry

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let registry = self.registry
        router.registerHandler(
            forMethod: Vmshim_Registrar_V1_Registrar.Method.ListDomains.descriptor,
            deserializer: ProtobufDeserializer<Vmshim_Registrar_V1_ListDomainsRequest>(),
            serializer: EncodedDomainListSerializer(),
            handler: { request, context in
                let message = try await ServerRequest(stream: request).message
                return StreamingServerResponse(single: ServerResponse(message: try await registry.encodedList(message)))
            })
    }
}

/// A ListDomainsResponse as the encoded bytes of its domains.
struct EncodedDomainList: Sendable {
    var domains: [[UInt8]]
}

/// Writes ListDomainsResponse's wire format: each domain as field 1
/// (length-delimited), exactly what SwiftProtobuf writes for `domains`.
struct EncodedDomainListSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: EncodedDomainList) throws -> Bytes {
        var out: [UInt8] = []
        out.reserveCapacity(message.domains.reduce(0) { $0 + $1.count + 6 })
        for domain in message.domains {
            out.append(0x0A)  // field 1, wire type 2
            var length = UInt64(domain.count)
            while length >= 0x80 {
                out.append(UInt8(truncatingIfNeeded: length) | 0x80)
                length >>= 7
            }
            out.append(UInt8(length))
            out.append(contentsOf: domain)
        }
        return Bytes(out)
    }
}
