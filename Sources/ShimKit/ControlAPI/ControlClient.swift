import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix

/// A client for one shim's control socket (used by the CLI and tests).
public struct ControlClient: Sendable {
    public let socketPath: String
    public let timeout: Duration

    public init(socketPath: String, timeout: Duration = .seconds(120)) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    /// Opens a connection, runs `body` with the generated client, closes.
    public func with<T: Sendable>(
        _ body: @Sendable (Vmshim_Control_V1_Control.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        try await UnixSocketGRPC.withClient(
            socketPath: socketPath, missing: "no control socket at \(socketPath): is the VM running under vmshim?",
            context: "control socket \(socketPath)"
        ) { client in
            try await body(Vmshim_Control_V1_Control.Client(wrapping: client))
        }
    }

    var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        return options
    }

    public func info() async throws -> Vmshim_Control_V1_InfoResponse {
        let options = callOptions
        return try await with { try await $0.info(Vmshim_Control_V1_InfoRequest(), options: options) }
    }

    public func state(includeXML: Bool = false) async throws -> Vmshim_Control_V1_DomainState {
        var request = Vmshim_Control_V1_GetStateRequest()
        request.includeXml = includeXML
        let options = callOptions
        return try await with { [request] in try await $0.getState(request, options: options) }
    }

    public func shutdown(timeoutSeconds: UInt32 = 0, force: Bool = false, wait: Bool = true) async throws -> Vmshim_Control_V1_DomainState {
        var request = Vmshim_Control_V1_ShutdownRequest()
        request.timeoutSeconds = timeoutSeconds
        request.forceAfterTimeout = force
        request.noWait = !wait
        let options = callOptions
        return try await with { [request] in try await $0.shutdown(request, options: options).state }
    }

    public func reboot(reset: Bool = false) async throws -> Vmshim_Control_V1_DomainState {
        var request = Vmshim_Control_V1_RebootRequest()
        request.mode = reset ? .reset : .acpi
        let options = callOptions
        return try await with { [request] in try await $0.reboot(request, options: options).state }
    }

    public func pause() async throws -> Vmshim_Control_V1_DomainState {
        let options = callOptions
        return try await with { try await $0.pause(Vmshim_Control_V1_PauseRequest(), options: options).state }
    }

    public func resume() async throws -> Vmshim_Control_V1_DomainState {
        let options = callOptions
        return try await with { try await $0.resume(Vmshim_Control_V1_ResumeRequest(), options: options).state }
    }

    public func destroy(graceSeconds: UInt32 = 0) async throws -> Vmshim_Control_V1_DomainState {
        var request = Vmshim_Control_V1_DestroyRequest()
        request.graceSeconds = graceSeconds
        let options = callOptions
        return try await with { [request] in try await $0.destroy(request, options: options).state }
    }

    public func qmp(_ commandJSON: String, timeoutSeconds: UInt32 = 0) async throws -> Vmshim_Control_V1_QMPResponse {
        var request = Vmshim_Control_V1_QMPRequest()
        request.commandJson = commandJSON
        request.timeoutSeconds = timeoutSeconds
        let options = callOptions
        return try await with { [request] in try await $0.qmp(request, options: options) }
    }

    /// Managed save; the shim exits once QEMU has stopped.
    public func save(bypassCache: Bool = false, bandwidthMiBPerSecond: UInt64 = 0) async throws -> Vmshim_Control_V1_SaveResponse {
        var request = Vmshim_Control_V1_SaveRequest()
        request.bypassCache = bypassCache
        request.bandwidthMibPerSecond = bandwidthMiBPerSecond
        // A save takes as long as the guest's memory takes to write.
        var options = callOptions
        options.timeout = nil
        return try await with { [request, options] in try await $0.save(request, options: options) }
    }

    /// Streams events until `handler` returns false or the shim ends.
    public func watchEvents(includeQMP: Bool, _ handler: @escaping @Sendable (Vmshim_Control_V1_Event) async -> Bool) async throws {
        var request = Vmshim_Control_V1_WatchEventsRequest()
        request.includeQmp = includeQMP
        var streamOptions = CallOptions.defaults
        streamOptions.timeout = nil
        let options = streamOptions
        try await with { [request] client in
            try await client.watchEvents(request, options: options) { response in
                for try await event in response.messages {
                    if await !handler(event) { break }
                }
            }
        }
    }
}
