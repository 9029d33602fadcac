#if canImport(Glibc)
import Glibc
#endif
import NIOPosix
import ShimKit
import SwiftProtobuf
import Synchronization

/// The registrar's durable record of the shims it knows: one file per domain,
/// `<state dir>/domains/<uuid>.json`, written atomically (temporary file,
/// fsync, rename, fsync of the directory) off the registry's actor. Writes
/// for one domain are coalesced: only the newest record is written.
/// Format: docs/registrar.md.
final class RecordStore: Sendable {
    static let version = 1

    struct Record: Sendable {
        var domain: Domain
        var bootID: String
        var sameNamespace: Bool

        /// The part of a domain a record keeps: who the shim is and where
        /// its QEMU was, not figures or connection details.
        struct Content: Equatable, Sendable {
            var identity: Vmshim_Registrar_V1_DomainIdentity
            var status: Vmshim_Registrar_V1_DomainStatus
            var shimHostPID: Int32
            var sameNamespace: Bool
        }

        var durableContent: Content {
            Content(identity: domain.identity, status: domain.status, shimHostPID: domain.shimHostPid, sameNamespace: sameNamespace)
        }
    }

    let directory: String
    private let pending = PendingBox()
    private let wake: AsyncStream<Void>.Continuation
    private let worker: Task<Void, Never>

    private final class PendingBox: Sendable {
        let state = Mutex(Pending())
        func withLock<T>(_ body: (inout Pending) -> T) -> T { state.withLock { body(&$0) } }
    }

    private struct Pending {
        /// nil: remove the record.
        var changes: [String: Record?] = [:]
        var idle: [CheckedContinuation<Void, Never>] = []
        var writing = false
    }

    init(stateDirectory: String) throws {
        directory = stateDirectory + "/domains"
        try FileIO.makeDirectories(directory, mode: 0o700)
        let (stream, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        let pending = self.pending
        let directory = self.directory
        worker = Task {
            for await _ in stream {
                while true {
                    let batch = pending.withLock { state -> [String: Record?] in
                        defer { state.changes = [:] }
                        state.writing = !state.changes.isEmpty
                        return state.changes
                    }
                    if batch.isEmpty { break }
                    _ = try? await NIOThreadPool.singleton.runIfActive {
                        for (uuid, record) in batch {
                            RecordStore.apply(uuid: uuid, record: record, directory: directory)
                        }
                    }
                }
                let waiters = pending.withLock { state -> [CheckedContinuation<Void, Never>] in
                    state.writing = false
                    guard state.changes.isEmpty else { return [] }
                    defer { state.idle = [] }
                    return state.idle
                }
                for waiter in waiters { waiter.resume() }
            }
        }
    }

    deinit {
        wake.finish()
    }

    func save(_ record: Record) {
        pending.withLock { $0.changes[record.domain.identity.uuid] = .some(record) }
        wake.yield()
    }

    func remove(_ uuid: String) {
        pending.withLock { $0.changes[uuid] = .some(nil) }
        wake.yield()
    }

    /// Waits until every queued change is on disk (shutdown, tests).
    func flush() async {
        await withCheckedContinuation { continuation in
            let done = pending.withLock { state -> Bool in
                if state.changes.isEmpty, !state.writing { return true }
                state.idle.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    func path(_ uuid: String) -> String { "\(directory)/\(uuid).json" }

    private static func apply(uuid: String, record: Record?, directory: String) {
        let path = "\(directory)/\(uuid).json"
        guard let record else {
            FileIO.remove(path)
            FileIO.syncDirectory(of: path)
            return
        }
        do {
            try FileIO.writeAtomically(path, Array(encode(record).utf8), mode: 0o600)
        } catch {
            // The record is a recovery aid: a failed write loses nothing the
            // shim's re-registration would not bring back.
            printWarning("vmshim-registrar: cannot write the record \(path): \(error)")
        }
    }

    static func encode(_ record: Record) -> String {
        var domain = Domain()
        domain.identity = record.domain.identity
        domain.status = record.domain.status
        domain.shimHostPid = record.domain.shimHostPid
        let domainJSON = (try? domain.jsonString()) ?? "{}"
        var object: JSONObject = [
            "recordVersion": .int(Int64(version)), "bootId": .string(record.bootID),
            "sameNamespace": .bool(record.sameNamespace),
        ]
        object["domain"] = (try? JSONValue.parse(domainJSON)) ?? .object([:])
        return JSONValue.object(object).description + "\n"
    }

    static func decode(_ text: String, file: String) throws -> Record {
        let value: JSONValue
        do {
            value = try JSONValue.parse(text)
        } catch {
            throw ShimError(.invalidArgument, "\(file): not JSON: \(error)")
        }
        guard let version = value["recordVersion"]?.int64Value else {
            throw ShimError(.invalidArgument, "\(file): no recordVersion")
        }
        guard version == Int64(Self.version) else {
            throw ShimError(.unsupported, "\(file): record version \(version) is not \(Self.version)")
        }
        guard let domainValue = value["domain"], case .object = domainValue else {
            throw ShimError(.invalidArgument, "\(file): no domain object")
        }
        let domain: Domain
        do {
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            domain = try Domain(jsonString: domainValue.description, options: options)
        } catch {
            throw ShimError(.invalidArgument, "\(file): the domain does not decode: \(error)")
        }
        guard DomainUUID(domain.identity.uuid) != nil else {
            throw ShimError(.invalidArgument, "\(file): the domain has no valid UUID")
        }
        return Record(
            domain: domain, bootID: value["bootId"]?.stringValue ?? "", sameNamespace: value["sameNamespace"]?.boolValue ?? false)
    }

    /// Every record on disk; unreadable ones are reported and moved aside
    /// (`.bad`) so they do not stop the registrar.
    func loadAll() -> [Record] {
        FileIO.listDirectory(directory).filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.sorted().compactMap { file in
            let path = "\(directory)/\(file)"
            do {
                return try Self.decode(FileIO.readString(path), file: path)
            } catch {
                printWarning("vmshim-registrar: skipping \(path): \((error as? ShimError)?.message ?? "\(error)"); moved to \(path).bad")
                _ = rename(path, path + ".bad")
                return nil
            }
        }
    }
}

func printWarning(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
