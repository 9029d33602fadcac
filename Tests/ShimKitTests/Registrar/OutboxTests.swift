import Synchronization
import Testing
@testable import Registrar
@testable import ShimKit

/// The outbox keeps a Register stream's messages in order with no task of
/// its own: the answer to a snapshot first, then host requests.
struct OutboxTests {
    /// Records what was written; `gate` holds the first write until released.
    final class Recorder: Sendable {
        let written = Mutex<[UInt64]>([])
        let failing: Bool
        init(failing: Bool = false) { self.failing = failing }

        func write(_ message: RegistrarMessage) async throws {
            // Yield so that concurrent senders get a chance to interleave.
            await Task.yield()
            if failing { throw ShimError(.unavailable, "stream broken") }
            written.withLock { $0.append(Self.tag(message)) }
        }

        static func tag(_ message: RegistrarMessage) -> UInt64 {
            switch message.kind {
            case .registered(let answer): return answer.epoch
            case .request(let request): return request.id
            default: return 0
            }
        }
    }

    static func request(_ id: UInt64) -> RegistrarMessage { .with { $0.request.id = id } }

    @Test func theAnswerGoesFirstAndRequestsKeepTheirOrder() async throws {
        let recorder = Recorder()
        let outbox = Outbox { try await recorder.write($0) }
        outbox.post(.with { $0.registered.epoch = 1 })
        // Host requests arrive before the stream's task flushes the answer.
        for id in 100..<150 { outbox.send(Self.request(UInt64(id))) }
        await outbox.flush()
        try await waitUntil { recorder.written.withLock { $0.count } == 51 }
        #expect(recorder.written.withLock { $0 } == [1] + (100..<150).map(UInt64.init))
    }

    @Test func aFailedWriteClosesTheOutbox() async throws {
        let recorder = Recorder(failing: true)
        let outbox = Outbox { try await recorder.write($0) }
        outbox.post(.with { $0.registered.epoch = 1 })
        await outbox.flush()
        #expect(outbox.isClosed)
        outbox.send(Self.request(7))
        try await Task.sleep(for: .milliseconds(50))
        #expect(recorder.written.withLock { $0 }.isEmpty)
    }

    @Test func nothingIsQueuedAfterClose() async throws {
        let recorder = Recorder()
        let outbox = Outbox { try await recorder.write($0) }
        outbox.send(Self.request(1))
        outbox.close()
        outbox.send(Self.request(2))
        await outbox.flush()
        try await waitUntil { recorder.written.withLock { $0.count } == 1 }
        try await Task.sleep(for: .milliseconds(50))
        #expect(recorder.written.withLock { $0 } == [1])
    }

    func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out")
                return
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}
