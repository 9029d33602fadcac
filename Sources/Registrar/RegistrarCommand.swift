import ArgumentParser
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// `vmshim-registrar`: the host's one central daemon. It aggregates the
/// state and accounting of every shim and never owns a VM (docs/registrar.md).
@main
struct RegistrarCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmshim-registrar",
        abstract: "Aggregates the state and resource accounting of every vmshim on the host.",
        discussion: "Shims register over the socket; `vmshim list` and gRPC clients query it. See docs/registrar.md.",
        version: RegistrarVersion.current)

    @Option(help: ArgumentHelp("The unix socket to serve.", valueName: "path"))
    var socket = RunDirectory.defaultRoot + "/registrar.sock"

    @Option(help: ArgumentHelp("Where the per-shim records live.", valueName: "dir"))
    var stateDir = "/var/lib/vmshim/registrar"

    @Option(name: .customLong("run-root"), help: ArgumentHelp("A run root to scan for shims (repeatable; default: the socket's directory).", valueName: "dir"))
    var runRoots: [String] = []

    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://ADDRESS:PORT/metrics.", valueName: "address:port"))
    var metricsListen: String?

    @Option(help: ArgumentHelp("Seconds a known shim gets to re-register after a restart before its domain is shown unreachable.", valueName: "seconds"))
    var grace: Double = 10

    @Option(help: ArgumentHelp("Seconds between a shim's resource updates.", valueName: "seconds"))
    var resourceInterval: UInt32 = 10

    @Option(help: ArgumentHelp("Group (name or number) allowed on the socket besides root and this user; the socket is then 0660.", valueName: "group"))
    var socketGroup: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
        guard grace > 0, grace <= 86_400 else { throw ValidationError("--grace must be between 0 and 86400 seconds") }
        guard resourceInterval > 0, resourceInterval <= 86_400 else { throw ValidationError("--resource-interval must be positive") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let logger = Logger(label: "vmshim-registrar") { ShimLogHandler(label: $0, level: level) }
        do {
            try await serve(logger: logger)
        } catch let error as ShimError {
            logger.error("\(error.message)")
            throw ExitCode(1)
        }
    }

    func serve(logger: Logger) async throws {
        let group = try socketGroup.map(Self.groupID)
        if UnixSocket.isListening(path: socket) {
            throw ShimError(
                .alreadyExists,
                "another registrar serves \(socket); stop it first (one registrar per host), or give this one its own --socket")
        }
        let roots = runRoots.isEmpty ? [FileIO.parentDirectory(of: socket)] : runRoots
        let store: RecordStore
        do {
            store = try RecordStore(stateDirectory: stateDir)
        } catch {
            throw ShimError(.system, "cannot use the state directory \(stateDir): \((error as? ShimError)?.message ?? "\(error)")")
        }
        let registry = Registry(
            store: store,
            settings: .init(grace: .milliseconds(Int64(grace * 1000)), resourceIntervalSeconds: resourceInterval),
            logger: logger)
        await registry.restore(store.loadAll().map { ($0, RunDirectoryScan.refreshed($0)) })
        await registry.adopt(RunDirectoryScan.scan(roots: roots, skipping: await registry.knownUUIDs))

        // Metrics first: a bad --metrics-listen stops the start before any
        // shim could register.
        var metricsChannel: (any Channel)?
        if let metricsListen {
            metricsChannel = try await MetricsServer(listen: metricsListen) {
                PrometheusText.render(await registry.allDomains, host: .current())
            }.bind(group: EventLoops.shared)
        }
        try FileIO.makeDirectories(FileIO.parentDirectory(of: socket), mode: 0o755)
        let startedAt = Int64(time(nil))
        let main = try Self.server(
            path: socket, group: group, readOnly: false, registry: registry, startedAt: startedAt)
        let readOnly: (server: GRPCServer<HTTP2ServerTransport.Posix>, fd: Int32)
        do {
            readOnly = try Self.server(
                path: readOnlySocket, group: nil, readOnly: true, registry: registry, startedAt: startedAt)
        } catch {
            close(main.fd)
            unlink(socket)
            throw error
        }

        var services: [any Service] = [
            TaskService(name: "grpc", onStop: { await registry.beginStopping() }) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await main.server.serve() }
                    // The transport listens again with NIO's backlog of 128;
                    // a thousand shims reconnect at once after a restart.
                    _ = try await main.server.listeningAddress
                    Glibc.listen(main.fd, 4096)
                    try await group.waitForAll()
                }
            },
            TaskService(name: "grpc-read-only") { try await readOnly.server.serve() },
            TaskService(name: "liveness") {
                // Disconnects are seen at once; this turns waiting domains
                // unreachable after the grace period and notices dead QEMUs.
                var ticks = 0
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(250))
                    await registry.sweep()
                    ticks += 1
                    // A burst of registrations (a restart with a thousand
                    // shims) leaves freed heap that glibc keeps; hand it back.
                    if ticks % 8 == 0 { Heap.trim() }
                }
            },
            TaskService(name: "scan") {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(10))
                    let known = await registry.knownUUIDs
                    let found = try await NIOThreadPool.singleton.runIfActive {
                        RunDirectoryScan.scan(roots: roots, skipping: known)
                    }
                    await registry.adopt(found)
                }
            },
        ]
        if let metricsChannel {
            services.append(TaskService(name: "metrics") { try await MetricsServer.serve(metricsChannel) })
            logger.info("metrics at http://\(metricsListen ?? "")/metrics")
        }
        logger.info(
            "serving \(socket) and \(readOnlySocket) (read-only) (version \(RegistrarVersion.current), state \(stateDir), scanning \(roots.joined(separator: ", ")))")
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        defer {
            unlink(socket)
            unlink(readOnlySocket)
        }
        try await serviceGroup.run()
        await store.flush()
        logger.info("stopped; the shims run on and register again with the next registrar")
    }

    /// The read-only socket beside the main one: `registrar.sock` → `registrar-ro.sock`.
    var readOnlySocket: String {
        (socket.hasSuffix(".sock") ? String(socket.dropLast(5)) : socket) + "-ro.sock"
    }

    /// A gRPC server on its own listening socket. The main socket (0600, or
    /// 0660 with a group) admits root, this user and the group, checked with
    /// SO_PEERCRED; the read-only one (0666) admits anyone to the queries,
    /// like libvirt's libvirt-sock-ro, and refuses Register.
    static func server(
        path: String, group: UInt32?, readOnly: Bool, registry: Registry, startedAt: Int64
    ) throws -> (server: GRPCServer<HTTP2ServerTransport.Posix>, fd: Int32) {
        // A thousand shims reconnect at once after a restart: a deep backlog.
        let fd = try UnixSocket.listen(
            path: path, mode: readOnly ? 0o666 : group == nil ? 0o600 : 0o660, backlog: 4096, group: group)
        let policy = readOnly ? PeerPolicy.anyone : PeerPolicy(allowedGroup: group)
        var config = HTTP2ServerTransport.Posix.Config.defaults
        // A shim's connection reads a snapshot, then a few hundred bytes
        // every few seconds: small pooled receive buffers, one per read
        // cycle, instead of NIO's four of 2 KiB and up (a thousand shims).
        config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
            channel.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 256, initial: 512, maximum: 65536))
                .flatMap { channel.setOption(.maxMessagesPerRead, value: 1) }
        }
        config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in
            PeerAccess.guardStream(stream, policy: policy, socket: path, stampPeer: true)
        }
        // A shim that hangs without closing its socket is found by pings.
        config.connection.keepalive.time = .seconds(10)
        config.connection.keepalive.timeout = .seconds(5)
        config.connection.keepalive.clientBehavior.allowWithoutCalls = true
        config.connection.keepalive.clientBehavior.minPingIntervalWithoutCalls = .seconds(5)
        let transport = HTTP2ServerTransport.Posix(
            listeningSocketDescriptor: Int(fd), transportSecurity: .plaintext, config: config,
            eventLoopGroup: EventLoops.shared)
        let server = GRPCServer(
            transport: transport,
            services: [
                RegistrarService(registry: registry, startedAt: startedAt, readOnlySocket: readOnly ? path : nil),
                CachedListDomainsService(registry: registry),
            ])
        return (server, fd)
    }

    static func groupID(_ text: String) throws -> UInt32 {
        if let number = UInt32(text) { return number }
        guard let entry = getgrnam(text) else {
            throw ShimError(.invalidArgument, "--socket-group: no group named '\(text)' (see /etc/group)")
        }
        return entry.pointee.gr_gid
    }
}

/// A long-running task as a ServiceLifecycle service; graceful shutdown
/// cancels it (registrations are long-lived streams the shims re-open, so
/// waiting for them to finish would never end).
struct TaskService: Service {
    let name: String
    /// Runs when the shutdown begins, before the body is cancelled.
    var onStop: (@Sendable () async -> Void)? = nil
    let body: @Sendable () async throws -> Void

    func run() async throws {
        guard let onStop else {
            try await cancelWhenGracefulShutdown { try await runBody() }
            return
        }
        // Wait for the shutdown signal, tell the owner, then cancel.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runBody() }
            group.addTask {
                try? await gracefulShutdown()
                await onStop()
                throw CancellationError()
            }
            defer { group.cancelAll() }
            do {
                try await group.next()
            } catch is CancellationError {}
        }
    }

    private func runBody() async throws {
        do {
            try await body()
        } catch {
            // Cancelled by the shutdown: however the body reports it
            // (gRPC wraps it in a transport error), that is a clean stop.
            if Task.isCancelled || error is CancellationError { return }
            throw error
        }
    }
}
