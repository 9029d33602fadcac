import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Delivers signals as an async stream. The signals are ignored at the
/// process level (so the default action never runs) and observed through
/// dispatch sources instead of an async-signal-unsafe handler.
public final class SignalWatcher: Sendable {
    public let signals: AsyncStream<Int32>
    private nonisolated(unsafe) let sources: [any DispatchSourceSignal]

    public init(_ watched: [Int32]) {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        signals = stream
        var created: [any DispatchSourceSignal] = []
        for number in watched {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            created.append(source)
        }
        sources = created
    }

    deinit {
        for source in sources { source.cancel() }
    }
}
