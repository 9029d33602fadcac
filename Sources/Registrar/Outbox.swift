import Synchronization

/// The messages the registrar sends down one Register stream, in order.
///
/// A thousand shims hold a thousand streams, so a stream owns no task of
/// its own for writing: the stream's task sends the answer to a snapshot
/// itself (`post`, then `flush`), and a host request, which arrives while that task
/// waits for the shim's next message, is sent by a short task that ends
/// when the queue is empty (`send`). One sender at a time keeps the order.
final class Outbox: Sendable {
    typealias Write = @Sendable (RegistrarMessage) async throws -> Void

    private struct State {
        var queue: [RegistrarMessage] = []
        var sending = false
        var closed = false
    }

    private let state = Mutex(State())
    private let write: Write
    /// The last short sending task, so `idle()` can wait for it.
    private let sender = Mutex<Task<Void, Never>?>(nil)

    init(write: @escaping Write) {
        self.write = write
    }

    /// Queues a message; a short task sends it unless a send is under way.
    /// False when the outbox is closed (the stream has ended or broke).
    @discardableResult
    func send(_ message: RegistrarMessage) -> Bool {
        let (queued, mustSend) = enqueue(message)
        if mustSend {
            let task = Task { await self.drain() }
            sender.withLock { $0 = task }
        }
        return queued
    }

    /// Returns when the last short sending task has finished, so a caller
    /// (the tests) can wait for what was sent without guessing how long.
    func idle() async {
        await sender.withLock { $0 }?.value
    }

    /// Queues a message without sending it: the registry queues its answer
    /// to a snapshot in the same step that makes the stream the domain's,
    /// so no host request can overtake it.
    func post(_ message: RegistrarMessage) {
        state.withLock { state in
            guard !state.closed else { return }
            state.queue.append(message)
        }
    }

    /// Sends what is queued from the caller's task, unless a send is under way.
    func flush() async {
        let mine = state.withLock { state in
            guard !state.sending, !state.queue.isEmpty else { return false }
            state.sending = true
            return true
        }
        if mine { await drain() }
    }

    /// No more messages: the stream has a new holder or has ended. What is
    /// already queued still goes out.
    func close() {
        state.withLock { $0.closed = true }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Whether it was queued, and whether the caller must send (nobody else is).
    private func enqueue(_ message: RegistrarMessage) -> (queued: Bool, mustSend: Bool) {
        state.withLock { state in
            guard !state.closed else { return (false, false) }
            state.queue.append(message)
            guard !state.sending else { return (true, false) }
            state.sending = true
            return (true, true)
        }
    }

    private func drain() async {
        while true {
            let next: RegistrarMessage? = state.withLock { state in
                guard !state.queue.isEmpty else {
                    state.sending = false
                    return nil
                }
                return state.queue.removeFirst()
            }
            guard let next else { return }
            do {
                try await write(next)
            } catch {
                // The stream is broken; its reader sees the end and reports
                // the disconnect. Nothing more can go down it.
                state.withLock { state in
                    state.queue.removeAll()
                    state.closed = true
                    state.sending = false
                }
                return
            }
        }
    }
}
