import CShimKit
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How a process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    /// The process was not our child (a reattached QEMU): it is gone, but its
    /// status went to its real parent.
    case unknown

    public var description: String {
        switch self {
        case .exited(let code): return "exit status \(code)"
        case .signaled(let signal): return "killed by signal \(signal) (\(signalName(signal)))"
        case .unknown: return "exited (status unavailable: not our child)"
        }
    }
}

func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGKILL: return "SIGKILL"
    case SIGTERM: return "SIGTERM"
    case SIGSEGV: return "SIGSEGV"
    case SIGABRT: return "SIGABRT"
    case SIGINT: return "SIGINT"
    case SIGHUP: return "SIGHUP"
    case SIGBUS: return "SIGBUS"
    case SIGILL: return "SIGILL"
    case SIGFPE: return "SIGFPE"
    default: return "signal \(signal)"
    }
}

/// A process watched through a pidfd: signals cannot hit a recycled pid, and
/// exit is noticed by polling the pidfd on a dispatch source, never by a
/// blocking wait on the cooperative pool. Works for children (exit status
/// reaped) and for processes we reattach to (status `.unknown`).
public final class ProcessHandle: Sendable {
    public let pid: pid_t
    private let pidfd: Int32
    private let state: Mutex<State>
    /// Dispatch sources are thread-safe; the pidfd becomes readable on exit.
    private nonisolated(unsafe) let source: any DispatchSourceRead

    private struct State {
        var exit: ExitStatus?
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<ExitStatus, Never>] = [:]
        var optionalWaiters: [UInt64: CheckedContinuation<ExitStatus?, Never>] = [:]
        var cancelledWaiters: Set<UInt64> = []
    }

    /// Takes ownership of `pidfd`.
    public init(pid: pid_t, pidfd: Int32) {
        self.pid = pid
        self.pidfd = pidfd
        self.state = Mutex(State())
        self.source = DispatchSource.makeReadSource(fileDescriptor: pidfd, queue: .global())
        source.setEventHandler { [weak self] in self?.pidfdReadable() }
        source.setCancelHandler { close(pidfd) }
        source.resume()
    }

    /// Opens a pidfd for an existing process; nil when it does not exist.
    public static func attach(pid: pid_t) -> ProcessHandle? {
        let fd = cshim_pidfd_open(pid)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return ProcessHandle(pid: pid, pidfd: fd)
    }

    public convenience init(_ spawned: SpawnedProcess) {
        self.init(pid: spawned.pid, pidfd: spawned.pidfd)
    }

    deinit {
        source.cancel()
    }

    private func pidfdReadable() {
        var code: Int32 = 0
        var status: Int32 = 0
        let rc = cshim_pidfd_reap(pidfd, &code, &status)
        if rc != 1 { OwnChildren.forget(pid) }
        let result: ExitStatus
        switch rc {
        case 0:
            result = code == CLD_EXITED ? .exited(status) : .signaled(status)
        case 1:
            return  // spurious wakeup: still running
        default:
            result = .unknown  // ECHILD: not our child, but the pidfd says it is gone
        }
        let (waiters, optionalWaiters) = state.withLock { state in
            guard state.exit == nil else {
                return ([CheckedContinuation<ExitStatus, Never>](), [CheckedContinuation<ExitStatus?, Never>]())
            }
            state.exit = result
            // Level-triggered: stop watching now, the cancel handler closes the pidfd.
            source.cancel()
            defer {
                state.waiters.removeAll()
                state.optionalWaiters.removeAll()
                state.cancelledWaiters.removeAll()
            }
            return (Array(state.waiters.values), Array(state.optionalWaiters.values))
        }
        for waiter in waiters { waiter.resume(returning: result) }
        for waiter in optionalWaiters { waiter.resume(returning: result) }
    }

    public var exitStatus: ExitStatus? { state.withLock { $0.exit } }
    public var isRunning: Bool { exitStatus == nil }

    /// Suspends until the process has exited, ignoring cancellation: for
    /// callers whose whole job is to see the end.
    public func waitForExit() async -> ExitStatus {
        await withCheckedContinuation { continuation in
            let done: ExitStatus? = state.withLock { state in
                if let exit = state.exit { return exit }
                state.nextWaiter += 1
                state.waiters[state.nextWaiter] = continuation
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Suspends until the process has exited, or returns nil as soon as the
    /// calling task is cancelled (so a task group racing the exit against
    /// something else can finish).
    public func exitOrCancellation() async -> ExitStatus? {
        let id: UInt64 = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<ExitStatus?, Never>) in
                let done: ExitStatus?? = state.withLock { state in
                    if let exit = state.exit { return .some(exit) }
                    if state.cancelledWaiters.remove(id) != nil { return .some(nil) }
                    state.optionalWaiters[id] = continuation
                    return nil
                }
                if let done { continuation.resume(returning: done) }
            }
        } onCancel: {
            let waiter: CheckedContinuation<ExitStatus?, Never>? = state.withLock { state in
                if let waiter = state.optionalWaiters.removeValue(forKey: id) { return waiter }
                // Cancelled before the continuation was registered.
                if state.exit == nil { state.cancelledWaiters.insert(id) }
                return nil
            }
            waiter?.resume(returning: nil)
        }
    }

    /// Waits up to `timeout`; nil when still running.
    public func waitForExit(timeout: Duration) async -> ExitStatus? {
        if let done = exitStatus { return done }
        return await withTaskGroup(of: ExitStatus?.self) { group in
            group.addTask { await self.exitOrCancellation() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if first == nil { return self.exitStatus }
            return first
        }
    }

    /// Sends a signal through the pidfd; false when the process is gone.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        // Under the lock: once `exit` is set the pidfd may be closed.
        state.withLock { state in
            guard state.exit == nil else { return false }
            return cshim_pidfd_send_signal(pidfd, signal) == 0
        }
    }

    /// SIGTERM, wait `grace`, then SIGKILL; returns how it ended.
    public func terminate(grace: Duration) async -> ExitStatus {
        if let done = exitStatus { return done }
        signal(SIGTERM)
        if let status = await waitForExit(timeout: grace) { return status }
        signal(SIGKILL)
        return await waitForExit()
    }
}
