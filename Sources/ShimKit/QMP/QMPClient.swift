import Logging
import NIOCore
import NIOPosix
import Synchronization
import CShimKit

/// An asynchronous QMP client over a unix socket.
///
/// Shaped like QEMU's own python/qemu/qmp client: read the greeting, negotiate
/// capabilities, then a reader routes replies to callers by id and events to
/// `events`. Every command has a timeout; when the monitor closes, every
/// pending command fails with `.unavailable` and `events` finishes.
///
/// The client is a `Sendable` class with its state behind a mutex rather than
/// an actor so the reader can complete callers without an actor hop per line.
public final class QMPClient: Sendable {
    /// Every event QEMU sends, in order. One consumer (the VM's supervisor).
    public let events: AsyncStream<QMPEvent>
    public let defaultTimeout: Duration
    let path: String
    let logger: Logger

    private let eventSink: AsyncStream<QMPEvent>.Continuation
    private let state: Mutex<State>
    private let closedSignal: AsyncStream<Void>.Continuation
    /// Finishes when the monitor connection has closed.
    public let closedStream: AsyncStream<Void>

    struct Pending {
        var command: String
        var continuation: CheckedContinuation<QMPMessage, any Error>
        var timeoutTask: Task<Void, Never>?
    }

    struct State {
        var nextID: UInt64 = 1
        var pending: [String: Pending] = [:]
        var closedReason: String?
        var readerTask: Task<Void, Never>?
        var outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>?
        var greeting: QMPGreeting?
        /// For getfd: the channel's event loop and its socket descriptor.
        var channel: (any Channel)?
        var socket: Int32 = -1
    }

    private init(path: String, timeout: Duration, logger: Logger) {
        self.path = path
        self.defaultTimeout = timeout
        self.logger = logger
        (events, eventSink) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .unbounded)
        (closedStream, closedSignal) = AsyncStream.makeStream(of: Void.self)
        state = Mutex(State())
    }

    /// QEMU's greeting (version and capabilities).
    public var greeting: QMPGreeting {
        state.withLock { $0.greeting } ?? QMPGreeting(.null)
    }

    /// Connects, reads the greeting and negotiates capabilities (no OOB).
    ///
    /// Maps to QMP `qmp_capabilities`.
    public static func connect(
        path: String, group: any EventLoopGroup = EventLoops.shared,
        timeout: Duration = .seconds(30), logger: Logger = Logger(label: "vmshim.qmp")
    ) async throws -> QMPClient {
        let channel: NIOAsyncChannel<String, ByteBuffer>
        let rawChannel: any Channel
        let socket: Int32
        do {
            // Our own socket, not NIO's connect: getfd needs its descriptor
            // for sendmsg with SCM_RIGHTS, which NIO cannot send.
            socket = try UnixSocket.connectNonBlocking(path: path)
            (channel, rawChannel) = try await ClientBootstrap(group: group)
                .withConnectedSocket(socket) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(QMPLineDecoder()))
                        return (try NIOAsyncChannel<String, ByteBuffer>(wrappingChannelSynchronously: channel), channel)
                    }
                }
        } catch {
            throw ShimError(.unavailable, "cannot connect to the QMP monitor at \(path): \(error)", cause: error)
        }
        let client = QMPClient(path: path, timeout: timeout, logger: logger)
        client.state.withLock {
            $0.channel = rawChannel
            $0.socket = socket
        }
        do {
            // A monitor that accepts but never greets is cut off after `timeout`.
            let watchdog = Task {
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                client.shutDown(reason: "no QMP greeting within \(timeout.shortDescription)")
                client.state.withLock { $0.readerTask }?.cancel()
            }
            defer { watchdog.cancel() }
            let greeting = try await withCheckedThrowingContinuation { continuation in
                client.startReader(channel, greeting: continuation)
            }
            client.state.withLock { $0.greeting = greeting }
            _ = try await client.execute("qmp_capabilities")
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// The reader owns the channel for its whole life: it publishes the writer,
    /// hands over the greeting, then routes every line until EOF.
    private func startReader(
        _ channel: NIOAsyncChannel<String, ByteBuffer>, greeting: CheckedContinuation<QMPGreeting, any Error>
    ) {
        let path = self.path
        let task = Task {
            var greetingContinuation: CheckedContinuation<QMPGreeting, any Error>? = greeting
            do {
                try await channel.executeThenClose { inbound, outbound in
                    self.state.withLock { $0.outbound = outbound }
                    var lines = inbound.makeAsyncIterator()
                    guard let first = try await lines.next() else {
                        throw ShimError(.unavailable, "QMP monitor at \(path) closed before its greeting")
                    }
                    guard case .greeting(let parsed) = try QMPMessage.decode(line: first) else {
                        throw ShimError(.unavailable, "QMP monitor at \(path) did not start with a greeting: \(first.prefix(200))")
                    }
                    greetingContinuation?.resume(returning: parsed)
                    greetingContinuation = nil
                    while let line = try await lines.next() {
                        self.route(line)
                    }
                }
                greetingContinuation?.resume(throwing: ShimError(.unavailable, "QMP monitor at \(path) closed before its greeting"))
                self.shutDown(reason: "QEMU closed the monitor connection")
            } catch {
                let reason = self.state.withLock { $0.closedReason } ?? "the monitor connection failed: \(error)"
                greetingContinuation?.resume(throwing: ShimError(.unavailable, "QMP monitor at \(path): \(reason)", cause: error))
                self.shutDown(reason: reason)
            }
        }
        state.withLock { $0.readerTask = task }
    }

    // MARK: - Commands

    /// Runs a command and returns its `return` value; a QMP error becomes a
    /// `.qmpCommandFailed` ShimError naming the command and QEMU's description.
    @discardableResult
    public func execute(_ command: String, _ arguments: JSONObject? = nil, timeout: Duration? = nil) async throws
        -> JSONValue
    {
        var message: JSONObject = ["execute": .string(command)]
        if let arguments { message["arguments"] = .object(arguments) }
        let reply = try await send(message, command: command, timeout: timeout ?? defaultTimeout)
        switch reply {
        case .success(_, let result, _):
            return result
        case .failure(_, let error, _):
            throw ShimError(.qmpCommandFailed, "QMP command '\(command)' failed: \(error.description)", cause: error)
        default:
            throw ShimError(.internalError, "QMP command '\(command)': unexpected reply")
        }
    }

    /// Typed form: `try await qmp.run(QueryStatus())`.
    public func run<C: QMPCommand>(_ command: C, timeout: Duration? = nil) async throws -> C.Response {
        let result = try await execute(C.name, command.arguments, timeout: timeout)
        return try C.decode(result)
    }

    /// Passthrough: sends a caller's command object (its own `id` is replaced
    /// for routing and restored in the reply) and returns QEMU's reply line.
    public func executeRaw(_ command: JSONObject, timeout: Duration? = nil) async throws -> (reply: String, isError: Bool) {
        guard let name = command["execute"]?.stringValue else {
            throw ShimError(.invalidArgument, "a QMP command is a JSON object with an \"execute\" member")
        }
        if command["exec-oob"] != nil {
            throw ShimError(.invalidArgument, "out-of-band commands (exec-oob) are not passed through")
        }
        if name == "qmp_capabilities" {
            throw ShimError(.invalidArgument, "qmp_capabilities is vmshim's own; the monitor is already negotiated")
        }
        let callerID = command["id"]
        var message = command
        message["id"] = nil
        let reply = try await send(message, command: name, timeout: timeout ?? defaultTimeout)
        let isError: Bool
        let raw: String
        switch reply {
        case .success(_, _, let line):
            raw = line
            isError = false
        case .failure(_, _, let line):
            raw = line
            isError = true
        default:
            throw ShimError(.internalError, "QMP command '\(name)': unexpected reply")
        }
        // Put the caller's id back (or drop ours) so the reply is what QEMU
        // would have sent them.
        guard case .object(var object) = try JSONValue.parse(raw) else { return (raw, isError) }
        object["id"] = callerID
        return (JSONValue.object(object).description, isError)
    }

    private func send(_ message: JSONObject, command: String, timeout: Duration) async throws -> QMPMessage {
        var message = message
        let id: String = try state.withLock { state in
            if let reason = state.closedReason {
                throw ShimError(.unavailable, "QMP command '\(command)' not sent: \(reason)")
            }
            defer { state.nextID += 1 }
            return "vmshim-\(state.nextID)"
        }
        message["id"] = .string(id)
        let line = JSONValue.object(message).description + "\n"
        logger.debug("QMP send", metadata: ["line": "\(line.dropLast())"])

        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<QMPMessage, any Error>) in
                let registered: ShimError? = state.withLock { state in
                    if let reason = state.closedReason {
                        return ShimError(.unavailable, "QMP command '\(command)' not sent: \(reason)")
                    }
                    let timeoutTask = Task { [weak self] in
                        guard (try? await Task.sleep(for: timeout)) != nil else { return }
                        self?.fail(
                            id: id,
                            ShimError(.timeout, "QMP command '\(command)' got no reply within \(timeout.shortDescription)"))
                    }
                    state.pending[id] = Pending(command: command, continuation: continuation, timeoutTask: timeoutTask)
                    return nil
                }
                if let registered {
                    continuation.resume(throwing: registered)
                    return
                }
                let outbound = state.withLock { $0.outbound }
                Task {
                    do {
                        guard let outbound else { throw ShimError(.unavailable, "the monitor is not connected") }
                        try await outbound.write(ByteBuffer(string: line))
                    } catch {
                        self.fail(id: id, ShimError(.unavailable, "QMP command '\(command)' could not be sent: \(error)", cause: error))
                    }
                }
            }
        } onCancel: {
            self.fail(id: id, ShimError(.cancelled, "QMP command '\(command)' was cancelled"))
        }
    }

    private func fail(id: String, _ error: ShimError) {
        let pending = state.withLock { $0.pending.removeValue(forKey: id) }
        pending?.timeoutTask?.cancel()
        pending?.continuation.resume(throwing: error)
    }

    /// Hands QEMU a file descriptor under `name`, for `migrate fd:NAME` and
    /// the like. Maps to QMP `getfd`.
    ///
    /// The descriptor rides on one whitespace byte sent with SCM_RIGHTS just
    /// before the command (JSON allows whitespace between commands); QEMU keeps
    /// the last descriptors it received until a command takes them. The byte
    /// is sent on the channel's event loop, so it cannot split a line NIO is
    /// writing; QMP lines are small and the socket buffer is empty between
    /// them, so NIO never holds a half-written line there.
    public func passFD(_ fd: Int32, name: String, timeout: Duration? = nil) async throws {
        let (channel, socket) = state.withLock { ($0.channel, $0.socket) }
        guard let channel, socket >= 0, !isClosed else {
            throw ShimError(.unavailable, "QMP command 'getfd' not sent: the monitor is not connected")
        }
        try await channel.eventLoop.submit {
            guard channel.isActive else {
                throw ShimError(.unavailable, "QMP command 'getfd' not sent: the monitor connection closed")
            }
            var space = UInt8(ascii: " ")
            let sent = cshim_send_fd(socket, &space, 1, fd)
            guard sent == 1 else {
                throw ShimError.system("cannot pass a file descriptor to QEMU over \(self.path)")
            }
        }.get()
        try await execute("getfd", ["fdname": .string(name)], timeout: timeout)
    }

    // MARK: - Reading

    fileprivate func route(_ line: String) {
        let message: QMPMessage
        do {
            message = try QMPMessage.decode(line: line)
        } catch {
            logger.warning("QMP: dropping an unreadable line", metadata: ["error": "\(error)"])
            return
        }
        switch message {
        case .event(let event):
            logger.debug("QMP event", metadata: ["event": "\(event.name)"])
            eventSink.yield(event)
        case .success(let id, _, _), .failure(let id, _, _):
            logger.debug("QMP reply", metadata: ["line": "\(line)"])
            guard let id, let pending = state.withLock({ $0.pending.removeValue(forKey: id) }) else {
                // A reply to a command that already timed out, or without an id
                // (QEMU could not parse what was sent): nobody waits for it.
                logger.warning("QMP: reply for no pending command", metadata: ["line": "\(line.prefix(300))"])
                return
            }
            pending.timeoutTask?.cancel()
            pending.continuation.resume(returning: message)
        case .greeting:
            logger.warning("QMP: unexpected second greeting")
        }
    }

    fileprivate func shutDown(reason: String) {
        let pending: [Pending] = state.withLock { state in
            guard state.closedReason == nil else { return [] }
            state.closedReason = reason
            defer { state.pending.removeAll() }
            return Array(state.pending.values)
        }
        for call in pending {
            call.timeoutTask?.cancel()
            call.continuation.resume(
                throwing: ShimError(.unavailable, "QMP command '\(call.command)' interrupted: \(reason)"))
        }
        eventSink.finish()
        closedSignal.finish()
    }

    public var isClosed: Bool { state.withLock { $0.closedReason != nil } }

    /// Closes the connection; pending commands fail.
    public func close() async {
        let (reader, outbound) = state.withLock { ($0.readerTask, $0.outbound) }
        outbound?.finish()
        reader?.cancel()
        shutDown(reason: "the client closed the monitor connection")
        await reader?.value
    }

    /// Waits until the monitor connection is closed by either side.
    public func waitUntilClosed() async {
        for await _ in closedStream {}
    }
}

extension Duration {
    /// "1.5s", "250ms": for messages.
    var shortDescription: String {
        let (seconds, attoseconds) = components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        if milliseconds >= 1000 { return "\(Double(milliseconds) / 1000)s" }
        return "\(milliseconds)ms"
    }
}
