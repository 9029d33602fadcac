import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The shim's side of the registrar's Register stream.
///
/// Registers the domain with a full snapshot, then streams state changes and
/// periodic resource figures. When the registrar goes away (restart, crash)
/// it reconnects with capped exponential backoff and jitter, and registers its
/// full snapshot again with a higher epoch. The registrar only watches: the
/// VM never depends on it, so every failure here is logged, never fatal,
/// except a refusal at start (another live shim holds the UUID).
public final class RegistrationClient: Sendable {
    public typealias ShimMessage = Vmshim_Registrar_V1_ShimMessage

    /// What the first attempt to register came to.
    public enum Verdict: Sendable {
        case pending
        case registered
        /// No registrar answered; the shim runs on and keeps trying.
        case unavailable(String)
        /// The registrar refused the domain (its UUID is held by another live shim).
        case refused(ShimError)
    }

    public let socketPath: String
    private let supervisor: VMSupervisor
    private let runDirectory: RunDirectory
    private let version: String
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var verdict = Verdict.pending
        var verdictWaiters: [CheckedContinuation<Void, Never>] = []
        var loop: Task<Void, Never>?
        var outbox: AsyncStream<ShimMessage>.Continuation?
        var registered = false
        var finished = false
        var lastEpoch: UInt64 = 0
        var resourceInterval: Duration = .seconds(10)
    }

    public init(socketPath: String, supervisor: VMSupervisor, runDirectory: RunDirectory, version: String, logger: Logger) {
        self.socketPath = socketPath
        self.supervisor = supervisor
        self.runDirectory = runDirectory
        self.version = version
        var logger = logger
        logger[metadataKey: "registrar"] = .string(socketPath)
        self.logger = logger
    }

    public func start() {
        let task = Task { await self.runLoop() }
        state.withLock { $0.loop = task }
    }

    /// Waits until the first attempt has an answer, at most `timeout`.
    public func firstVerdict(timeout: Duration) async -> Verdict {
        let waiter = Task {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state -> Bool in
                    if case .pending = state.verdict {
                        state.verdictWaiters.append(continuation)
                        return false
                    }
                    return true
                }
                if done { continuation.resume() }
            }
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.settle(.unavailable("the registrar did not answer within \(timeout)"), onlyIfPending: true)
        }
        await waiter.value
        timer.cancel()
        return state.withLock { $0.verdict }
    }

    /// Sends the domain's last state (`final`) and closes the stream; waits
    /// at most a second for the registrar to take it. A shim that leaves
    /// QEMU running for its successor (lost monitor) just disconnects: the
    /// registrar shows the domain unreachable until the next shim registers.
    public func finish(_ outcome: ShimOutcome) async {
        guard outcome.exitCode != ShimOutcome.Code.monitorLost else {
            let loop = state.withLock { state in
                state.finished = true
                return state.loop
            }
            loop?.cancel()
            return
        }
        let facts = await supervisor.registrationFacts
        var update = Vmshim_Registrar_V1_StateUpdate()
        update.status = RegistrationWire.status(facts)
        update.status.state = RegistrationWire.state(outcome.state)
        update.status.reason = outcome.reason
        update.status.message = outcome.message
        update.final = true
        let (outbox, loop) = state.withLock { state in
            state.finished = true
            return (state.registered ? state.outbox : nil, state.loop)
        }
        if let outbox {
            outbox.yield(.with { $0.state = update })
            outbox.finish()
            let closed = Task { await loop?.value }
            let deadline = Task {
                try? await Task.sleep(for: .seconds(1))
                loop?.cancel()
            }
            await closed.value
            deadline.cancel()
        } else {
            loop?.cancel()
        }
    }

    // MARK: - Connection loop

    /// Records the first attempt's outcome; later only a registration
    /// replaces it (unavailable at first, registered once the registrar is up).
    private func settle(_ verdict: Verdict, onlyIfPending: Bool = false) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            var pending = false
            if case .pending = state.verdict { pending = true }
            var registering = false
            if case .registered = verdict { registering = true }
            guard pending || (!onlyIfPending && registering) else { return [] }
            state.verdict = verdict
            defer { state.verdictWaiters = [] }
            return state.verdictWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func runLoop() async {
        var failures = 0
        var lastProblem = ""
        while !Task.isCancelled, !state.withLock({ $0.finished }) {
            var wasRegistered = false
            do {
                wasRegistered = try await session()
                if !state.withLock({ $0.finished }) {
                    logger.warning("the registrar closed the registration; registering again")
                }
            } catch let error as ShimError where error.code == .alreadyExists {
                settle(.refused(error))
                if error.message != lastProblem { logger.error("\(error.message)") }
                lastProblem = error.message
                // Another shim holds the UUID: ask again rarely.
                try? await Task.sleep(for: .seconds(30))
            } catch {
                let problem = (error as? ShimError)?.message ?? "\(error)"
                settle(.unavailable(problem))
                wasRegistered = state.withLock { $0.registered }
                if wasRegistered {
                    logger.warning("lost the registrar (\(problem)); reconnecting")
                } else if problem != lastProblem {
                    logger.debug("cannot register: \(problem); retrying")
                }
                lastProblem = problem
            }
            state.withLock {
                $0.registered = false
                $0.outbox = nil
            }
            if state.withLock({ $0.finished }) || Task.isCancelled { return }
            failures = wasRegistered ? 1 : failures + 1
            try? await Task.sleep(for: Self.backoff(failures: failures))
        }
    }

    /// 100 ms doubling up to 1 s, each scaled by a random 50–100 % so a
    /// thousand shims do not reconnect in lockstep after a registrar restart.
    public static func backoff(failures: Int) -> Duration {
        let base = min(1000, 100 << min(max(failures - 1, 0), 4))
        return .milliseconds(Int.random(in: base / 2...base))
    }

    private func nextEpoch() -> UInt64 {
        let now = UInt64(max(0, RegistrationWire.nowMicros()))
        return state.withLock { state in
            state.lastEpoch = max(now, state.lastEpoch + 1)
            return state.lastEpoch
        }
    }

    /// One Register stream, until it ends. Returns whether it got registered.
    private func session() async throws -> Bool {
        guard FileIO.exists(socketPath) else {
            throw ShimError(.unavailable, "no registrar socket at \(socketPath)")
        }
        let transport = try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext,
            config: .defaults {
                $0.backoff.initial = .milliseconds(50)
                // A registrar that hangs (not one that exits) is noticed by pings.
                $0.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(5), allowWithoutCalls: true)
            }, eventLoopGroup: EventLoops.shared)
        let (outgoing, outbox) = AsyncStream.makeStream(of: ShimMessage.self)
        let (_, events) = await supervisor.subscribeWithSnapshot()
        let facts = await supervisor.registrationFacts
        var snapshot = RegistrationWire.Snapshot()
        snapshot.epoch = nextEpoch()
        snapshot.identity = RegistrationWire.identity(facts, runDirectory: runDirectory, version: version)
        snapshot.status = RegistrationWire.status(facts)
        // Before QEMU runs there is nothing to account, and the first
        // registration sits on the start's path: figures follow the start.
        if facts.qemuPID > 0 { snapshot.resources = await ResourceSampler.sample(supervisor) }
        outbox.yield(.with { $0.snapshot = snapshot })
        state.withLock { $0.outbox = outbox }

        let supervisor = self.supervisor
        do {
            return try await withGRPCClient(transport: transport) { client in
                let registrar = Vmshim_Registrar_V1_Registrar.Client(wrapping: client)
                // Helpers return nil; only the RPC's end ends the session (the
                // event stream ends with the VM, before the final update).
                return try await withThrowingTaskGroup(of: Bool?.self) { group in
                    group.addTask {
                        for await event in events {
                            guard case .lifecycle = event.kind else { continue }
                            var update = Vmshim_Registrar_V1_StateUpdate()
                            update.status = RegistrationWire.status(await supervisor.registrationFacts)
                            outbox.yield(.with { $0.state = update })
                            // New QEMU figures at once (after a start, a restore, a reattach).
                            let resources = await ResourceSampler.sample(supervisor)
                            outbox.yield(.with { $0.resources = .with { $0.resources = resources } })
                        }
                        return nil
                    }
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: self.state.withLock { $0.resourceInterval })
                            var update = Vmshim_Registrar_V1_ResourceUpdate()
                            update.resources = await ResourceSampler.sample(supervisor)
                            outbox.yield(.with { $0.resources = update })
                        }
                        return nil
                    }
                    group.addTask {
                        var options = CallOptions.defaults
                        options.timeout = nil
                        options.waitForReady = false
                        return try await registrar.register(
                            options: options,
                            requestProducer: { writer in
                                for await message in outgoing { try await writer.write(message) }
                            },
                            onResponse: { response in
                                defer { outbox.finish() }
                                var registered = false
                                for try await message in response.messages {
                                    switch message.kind {
                                    case .registered(let answer):
                                        registered = true
                                        self.accept(answer)
                                    case .request(let request):
                                        Task {
                                            let result = await self.handle(request)
                                            outbox.yield(.with { $0.result = result })
                                        }
                                    case nil:
                                        break
                                    }
                                }
                                return registered
                            })
                    }
                    defer { group.cancelAll() }
                    while let finished = try await group.next() {
                        if let registered = finished { return registered }
                    }
                    return false
                }
            }
        } catch {
            outbox.finish()
            if let rpc = error as? RPCError, rpc.code == .alreadyExists {
                throw ShimError(
                    .alreadyExists,
                    "the registrar at \(socketPath) refused domain '\(facts.name)': \(rpc.message)", cause: rpc)
            }
            throw ShimError.fromRPC(error, "registrar \(socketPath)")
        }
    }

    private func accept(_ answer: Vmshim_Registrar_V1_Registered) {
        let first = state.withLock { state -> Bool in
            defer { state.registered = true }
            if answer.resourceIntervalSeconds > 0 {
                state.resourceInterval = .seconds(Int(answer.resourceIntervalSeconds))
            }
            if case .pending = state.verdict { return true }
            if case .unavailable = state.verdict { return true }
            return false
        }
        settle(.registered)
        if first {
            logger.info("registered with the registrar (epoch \(answer.epoch))")
        } else {
            logger.notice("registered again with the registrar (epoch \(answer.epoch))")
        }
    }

    /// A host policy's request: carried out like the same control call.
    private func handle(_ request: Vmshim_Registrar_V1_HostRequest) async -> Vmshim_Registrar_V1_RequestResult {
        var result = Vmshim_Registrar_V1_RequestResult()
        result.id = request.id
        do {
            switch request.kind {
            case .shutdown(let shutdown):
                try await supervisor.shutdown(
                    timeout: shutdown.timeoutSeconds == 0 ? nil : .seconds(Int(shutdown.timeoutSeconds)),
                    forceAfterTimeout: shutdown.forceAfterTimeout, wait: false)
            case .save(let save):
                _ = try await supervisor.save(bypassCache: save.bypassCache)
            case .destroy(let destroy):
                try await supervisor.destroy(grace: destroy.graceSeconds == 0 ? nil : .seconds(Int(destroy.graceSeconds)))
            case .pause:
                try await supervisor.pause()
            case .resume:
                try await supervisor.resume()
            case nil:
                throw ShimError(.invalidArgument, "host request \(request.id) names no operation")
            }
            result.ok = true
        } catch {
            let shimError = ShimError.wrap(error, .internalError, "host request \(request.id)")
            result.error = shimError.message
            result.errorCode = shimError.code.rawValue
            logger.warning("host request \(request.id) failed: \(shimError.message)")
        }
        return result
    }
}
