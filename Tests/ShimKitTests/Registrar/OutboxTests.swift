import Synchronization
import Testing
@testable import Registrar
@testable import ShimKit

/// The outbox keeps a Register stream's messages in order with no task of
/// its own: the answer to a snapshot first, then host requests.
struct OutboxTests {
    /// Records what was written and how many writes were tried.
    final class Recorder: Sendable {
        let written = Mutex<[UInt64]>([])
        let attempts = Mutex(0)
        let failing: Bool
        init(failing: Bool = false) { self.failing = failing }

        func write(_ message: RegistrarMessage) async throws {
            attempts.withLock { $0 += 1 }
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

    /// The stream's task sends the answer itself when no request is waiting.
    @Test func flushSendsFromTheCallersTask() async throws {
        let recorder = Recorder()
        let outbox = Outbox { try await recorder.write($0) }
        outbox.post(.with { $0.registered.epoch = 9 })
        #expect(recorder.attempts.withLock { $0 } == 0, "post alone sends nothing")
        await outbox.flush()
        #expect(recorder.written.withLock { $0 } == [9], "written before flush returned")
    }

    @Test func theAnswerGoesFirstAndRequestsKeepTheirOrder() async throws {
        let recorder = Recorder()
        let outbox = Outbox { try await recorder.write($0) }
        outbox.post(.with { $0.registered.epoch = 1 })
        // Host requests arrive before the stream's task flushes the answer.
        for id in 100..<150 { outbox.send(Self.request(UInt64(id))) }
        await outbox.flush()
        await outbox.idle()
        #expect(recorder.written.withLock { $0 } == [1] + (100..<150).map(UInt64.init))
    }

    @Test func aFailedWriteClosesTheOutbox() async throws {
        let recorder = Recorder(failing: true)
        let outbox = Outbox { try await recorder.write($0) }
        outbox.post(.with { $0.registered.epoch = 1 })
        await outbox.flush()
        #expect(outbox.isClosed)
        #expect(recorder.attempts.withLock { $0 } == 1)
        // A closed outbox refuses, so a host request fails at once instead of waiting.
        #expect(!outbox.send(Self.request(7)))
        await outbox.idle()
        #expect(recorder.attempts.withLock { $0 } == 1)
    }

    @Test func nothingIsQueuedAfterClose() async throws {
        let recorder = Recorder()
        let outbox = Outbox { try await recorder.write($0) }
        #expect(outbox.send(Self.request(1)))
        outbox.close()
        #expect(!outbox.send(Self.request(2)))
        await outbox.flush()
        await outbox.idle()
        #expect(recorder.written.withLock { $0 } == [1])
    }
}
