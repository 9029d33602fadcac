import NIOPosix
import Synchronization

/// Writes the status file off the cooperative pool, newest state wins.
///
/// Writes are coalesced: while one write runs, later requests replace each
/// other, and the last one is written next. So the file always ends at the
/// newest state and a slow disk never stalls the VM's actor.
public final class StatusWriter: Sendable {
    private let path: String
    private let state = Mutex<State>(State())

    private struct State {
        var pending: StatusFile?
        var writing = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var lastError: String?
        var closed = false
    }

    public init(path: String) { self.path = path }

    /// Queues `status` without waiting. Synchronous on purpose: called from
    /// the VM's actor, submissions keep the actor's order, so the file never
    /// goes back to an older state.
    public func submit(_ status: StatusFile) {
        let startWriter: Bool = state.withLock { state in
            // After close() the run directory is being removed: a late
            // write must not bring status.json back.
            if state.closed { return false }
            state.pending = status
            if state.writing { return false }
            state.writing = true
            return true
        }
        if startWriter {
            Task { await self.drain() }
        }
    }

    /// Returns once everything submitted so far (or something newer) is on disk.
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle: Bool = state.withLock { state in
                if !state.writing { return true }
                state.waiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    private func drain() async {
        while true {
            let (next, waiters): (StatusFile?, [CheckedContinuation<Void, Never>]) = state.withLock { state in
                guard let next = state.pending else {
                    state.writing = false
                    defer { state.waiters.removeAll() }
                    return (nil, state.waiters)
                }
                state.pending = nil
                return (next, [])
            }
            guard let next else {
                for waiter in waiters { waiter.resume() }
                return
            }
            let path = self.path
            do {
                try await NIOThreadPool.singleton.runIfActive { try next.write(to: path) }
                state.withLock { $0.lastError = nil }
            } catch {
                state.withLock { $0.lastError = "\(error)" }
            }
        }
    }

    /// Drops queued writes, waits for one in flight, and refuses later ones.
    public func close() async {
        state.withLock { state in
            state.closed = true
            state.pending = nil
        }
        await flush()
    }

    /// The last write error, if the newest write failed.
    public var lastError: String? { state.withLock { $0.lastError } }
}
