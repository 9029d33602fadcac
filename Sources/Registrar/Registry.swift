import Logging
import ShimKit
import SwiftProtobuf

#if canImport(Glibc)
import Glibc
#endif

typealias Domain = Vmshim_Registrar_V1_Domain
typealias WireState = Vmshim_Registrar_V1_State
typealias RegistrarMessage = Vmshim_Registrar_V1_RegistrarMessage
typealias RegistrarEvent = Vmshim_Registrar_V1_Event

/// The registrar's view of every domain on the host, keyed by UUID: the one
/// mutable owner, as an actor.
///
/// A domain is *connected* while its shim's Register stream is open. When
/// the stream drops, the domain is `unreachable` if its QEMU still runs (a
/// new shim can reattach) and gone when it does not. After a registrar
/// restart, domains come back from the durable records and run-directory
/// scan as not connected, keep their last known state for a grace period
/// while their shims reconnect, and only then turn unreachable.
actor Registry {
    struct Entry {
        var domain: Domain {
            didSet {
                name = domain.identity.name
                encoded = nil
            }
        }
        /// The domain's wire encoding, for ListDomains; nil after a change.
        var encoded: [UInt8]?
        /// The domain's name, kept apart for sorting and filtering.
        private(set) var name: String
        /// The Register stream that holds the domain, while connected, and
        /// what goes down it.
        var session: UInt64?
        var requests: Outbox?
        /// When a not-connected domain started waiting for its shim.
        var waitingSince: ContinuousClock.Instant?
        /// When the domain ended (shown until the retention passes).
        var endedAt: ContinuousClock.Instant?
        /// Whether the shim shares the registrar's pid namespace, so the
        /// registrar can check QEMU's pid itself.
        var sameNamespace: Bool
        /// What the durable record holds now (nil: nothing written yet).
        var persisted: RecordStore.Record.Content?

        init(
            domain: Domain, session: UInt64?, requests: Outbox?,
            waitingSince: ContinuousClock.Instant?, endedAt: ContinuousClock.Instant?, sameNamespace: Bool
        ) {
            self.domain = domain
            self.name = domain.identity.name
            self.session = session
            self.requests = requests
            self.waitingSince = waitingSince
            self.endedAt = endedAt
            self.sameNamespace = sameNamespace
        }
    }

    struct Settings {
        var grace: Duration = .seconds(10)
        var endedRetention: Duration = .seconds(300)
        var resourceIntervalSeconds: UInt32 = 10
    }

    private var entries: [String: Entry] = [:]
    private var nextSession: UInt64 = 1
    private var eventSequence: UInt64 = 0
    private let events = Broadcast<RegistrarEvent>(bufferLimit: 8192)
    private let store: RecordStore?
    private let settings: Settings
    private let logger: Logger
    private let bootID = ProcFS.bootID
    private var pendingRequests: [UInt64: CheckedContinuation<Vmshim_Registrar_V1_RequestResult, any Error>] = [:]
    /// Host requests waiting for their answer.
    var pendingRequestCount: Int { pendingRequests.count }
    private var nextRequest: UInt64 = 1

    init(store: RecordStore?, settings: Settings, logger: Logger) {
        self.store = store
        self.settings = settings
        self.logger = logger
    }

    // MARK: - Shims

    func newSession() -> UInt64 {
        defer { nextSession += 1 }
        return nextSession
    }

    /// A shim's snapshot: takes the domain unless another live shim holds it.
    func register(
        _ snapshot: Vmshim_Registrar_V1_Snapshot, session: UInt64, peerPID: Int32,
        requests: Outbox
    ) throws -> Vmshim_Registrar_V1_Registered {
        let identity = snapshot.identity
        guard DomainUUID(identity.uuid) != nil else {
            throw ShimError(.invalidArgument, "Register: snapshot.identity.uuid '\(identity.uuid)' is not a UUID")
        }
        guard !identity.name.isEmpty else {
            throw ShimError(.invalidArgument, "Register: snapshot.identity.name is empty")
        }
        let uuid = identity.uuid.lowercased()
        let sameNamespace = peerPID > 0 && peerPID == identity.shimPid
        if let held = entries[uuid], held.endedAt == nil, held.session != session {
            let holder = held.domain
            let sameShim = peerPID > 0 && holder.shimHostPid == peerPID
            // A connected holder seen without credentials counts as live; a
            // holder waiting to reconnect (registrar restart, backoff) counts
            // while its process lives.
            let holderAlive =
                Self.processAlive(holder.shimHostPid) || (held.session != nil && holder.shimHostPid <= 0)
            if !sameShim, holderAlive {
                throw ShimError(
                    .alreadyExists,
                    "domain '\(holder.identity.name)' (uuid \(uuid)) is already registered by the live shim pid \(holder.identity.shimPid) with run directory \(holder.identity.runDirectory); one UUID is one VM, so this second shim is refused. Stop the other shim (vmshim destroy) or give this domain its own UUID")
            }
            if sameShim, held.session != nil, snapshot.epoch <= holder.epoch {
                throw ShimError(
                    .invalidArgument,
                    "Register: epoch \(snapshot.epoch) is not newer than the held registration's \(holder.epoch) for domain '\(holder.identity.name)'")
            }
            held.requests?.close()
            if let heldSession = held.session { failPendingRequests(session: heldSession, name: holder.identity.name) }
        }
        var domain = Domain()
        domain.identity = identity
        domain.identity.uuid = uuid
        domain.status = snapshot.status
        domain.resources = snapshot.resources
        domain.epoch = snapshot.epoch
        domain.connected = true
        domain.lastSeenUnixMicros = Self.nowMicros()
        domain.source = "registered"
        domain.shimHostPid = peerPID
        let previous = entries[uuid]
        var entry = Entry(
            domain: domain, session: session, requests: requests, waitingSince: nil, endedAt: nil,
            sameNamespace: sameNamespace)
        entry.persisted = previous?.persisted
        entries[uuid] = entry
        persist(uuid)
        let again = previous.map { $0.domain.source != "registered" || !$0.domain.connected } ?? false
        logger.info(
            "\(again ? "re-registered" : "registered") '\(identity.name)' (uuid \(uuid), shim pid \(identity.shimPid), QEMU pid \(snapshot.status.qemuPid), \(RegistrationWire.name(snapshot.status.state)))")
        publish(.registered, domain)
        var answer = Vmshim_Registrar_V1_Registered()
        answer.epoch = snapshot.epoch
        answer.registrarVersion = RegistrarVersion.current
        answer.resourceIntervalSeconds = settings.resourceIntervalSeconds
        // Queued before any host request can be: the shim hears Registered first.
        requests.post(.with { $0.registered = answer })
        return answer
    }

    func update(_ update: Vmshim_Registrar_V1_StateUpdate, uuid: String, session: UInt64) {
        guard var entry = entries[uuid], entry.session == session else { return }
        let before = entry.domain.status
        entry.domain.status = update.status
        entry.domain.lastSeenUnixMicros = Self.nowMicros()
        if update.final {
            failPendingRequests(session: session, name: entry.domain.identity.name)
            entry.persisted = nil
            entry.domain.connected = false
            entry.session = nil
            entry.requests?.close()
            entry.requests = nil
            entry.endedAt = .now
            entries[uuid] = entry
            store?.remove(uuid)
            logger.info(
                "'\(entry.domain.identity.name)' ended: \(RegistrationWire.name(update.status.state)) (\(update.status.reason)): \(update.status.message)")
            publish(.gone, entry.domain)
            return
        }
        entries[uuid] = entry
        if before.state != update.status.state || before.qemuPid != update.status.qemuPid || before.reason != update.status.reason {
            persist(uuid)
            publish(.state, entry.domain)
        }
    }

    func resources(_ resources: Vmshim_Registrar_V1_Resources, uuid: String, session: UInt64) {
        guard entries[uuid]?.session == session else { return }
        entries[uuid]?.domain.resources = resources
        entries[uuid]?.domain.lastSeenUnixMicros = Self.nowMicros()
    }

    /// The shim's stream ended without a final update: the shim died or
    /// lost its connection. Decided at once from QEMU's pid when the
    /// registrar can see it.
    func disconnected(uuid: String, session: UInt64) {
        guard var entry = entries[uuid], entry.session == session else { return }
        failPendingRequests(session: session, name: entry.domain.identity.name)
        // A registrar that is stopping drops every stream itself: the
        // records keep the last state the shims reported.
        guard !stopping else { return }
        entry.session = nil
        entry.requests = nil
        entry.domain.connected = false
        entry.waitingSince = .now
        entries[uuid] = entry
        guard entry.domain.status.qemuPid > 0 else {
            // The shim died before QEMU's pid reached the registrar: the
            // sweep decides after the grace period.
            return
        }
        if entry.sameNamespace, !Self.qemuAlive(entry.domain.status, bootID: bootID) {
            markGone(uuid, reason: "the shim and QEMU pid \(entry.domain.status.qemuPid) are gone")
            return
        }
        markUnreachable(uuid, reason: "the shim's connection dropped")
    }

    private var stopping = false

    /// Called when the registrar stops: streams that end now are not news.
    func beginStopping() { stopping = true }

    private func failPendingRequests(session: UInt64, name: String) {
        for (id, waiter) in pendingRequests where id >> 32 == session {
            pendingRequests[id] = nil
            waiter.resume(throwing: ShimError(.unavailable, "the shim of '\(name)' disconnected before answering"))
        }
    }

    static func processAlive(_ pid: Int32) -> Bool {
        pid > 0 && ProcFS.startTime(pid: pid) != nil && !ProcFS.isZombie(pid: pid)
    }

    func result(_ result: Vmshim_Registrar_V1_RequestResult, session: UInt64) {
        // Only the session a request went down may answer it.
        guard result.id >> 32 == session else { return }
        pendingRequests.removeValue(forKey: result.id)?.resume(returning: result)
    }

    /// Sends a host request down a domain's Register stream and waits for the answer.
    func request(uuid: String, _ fill: (inout Vmshim_Registrar_V1_HostRequest) -> Void) async throws
        -> Vmshim_Registrar_V1_RequestResult
    {
        guard let entry = entries[uuid], let session = entry.session, let requests = entry.requests else {
            throw ShimError(.unavailable, "domain \(uuid) has no connected shim")
        }
        var request = Vmshim_Registrar_V1_HostRequest()
        fill(&request)
        request.id = session << 32 | nextRequest
        nextRequest += 1
        let id = request.id
        let message = RegistrarMessage.with { $0.request = request }
        return try await withCheckedThrowingContinuation { continuation in
            pendingRequests[id] = continuation
            guard requests.send(message) else {
                // The stream broke or ended under us: no answer will come.
                pendingRequests[id] = nil
                continuation.resume(throwing: ShimError(.unavailable, "the Register stream of domain \(uuid) is closed"))
                return
            }
        }
    }

    // MARK: - Recovery and liveness

    /// Domains from the durable records of a previous run: they wait for
    /// their shims for the grace period.
    /// `records` pair what is on disk with the same record refreshed from
    /// the shim's status file.
    func restore(_ records: [(onDisk: RecordStore.Record, current: RecordStore.Record)]) {
        for (onDisk, record) in records {
            guard entries[record.domain.identity.uuid] == nil else { continue }
            guard record.bootID == bootID else {
                logger.info("forgetting '\(record.domain.identity.name)': its record is from an earlier boot")
                store?.remove(record.domain.identity.uuid)
                continue
            }
            var domain = record.domain
            domain.connected = false
            domain.source = "record"
            var entry = Entry(
                domain: domain, session: nil, requests: nil, waitingSince: .now, endedAt: nil,
                sameNamespace: record.sameNamespace)
            entry.persisted = onDisk.durableContent
            entries[domain.identity.uuid] = entry
        }
        if !records.isEmpty { logger.info("restored \(records.count) domain record(s); waiting for their shims") }
    }

    /// Domains found in run directories that no record or shim named.
    func adopt(_ found: [RunDirectoryScan.Found]) {
        for item in found where entries[item.domain.identity.uuid] == nil {
            var domain = item.domain
            domain.source = "scan"
            entries[domain.identity.uuid] = Entry(
                domain: domain, session: nil, requests: nil, waitingSince: .now, endedAt: nil, sameNamespace: true)
            persist(domain.identity.uuid)
            logger.info("found '\(domain.identity.name)' in \(domain.identity.runDirectory); waiting for its shim")
        }
    }

    /// Turns waiting domains unreachable after the grace period, domains
    /// whose QEMU is gone into gone, and forgets ended ones after retention.
    func sweep(now: ContinuousClock.Instant = .now) {
        for (uuid, entry) in entries {
            if let endedAt = entry.endedAt {
                if now - endedAt > settings.endedRetention { entries[uuid] = nil }
                continue
            }
            guard !entry.domain.connected, let since = entry.waitingSince else { continue }
            if entry.sameNamespace, !Self.qemuAlive(entry.domain.status, bootID: bootID),
                entry.domain.status.state != .starting || now - since > settings.grace
            {
                markGone(uuid, reason: "QEMU pid \(entry.domain.status.qemuPid) is gone and its shim did not come back")
                continue
            }
            if entry.domain.status.state != .unreachable, now - since > settings.grace {
                markUnreachable(
                    uuid, reason: "its shim did not re-register within \(settings.grace) after the registrar started")
            }
        }
    }

    private func markUnreachable(_ uuid: String, reason: String) {
        guard var entry = entries[uuid] else { return }
        entry.domain.status.state = .unreachable
        entry.domain.status.reason = reason
        entries[uuid] = entry
        persist(uuid)
        logger.warning(
            "'\(entry.domain.identity.name)' is unreachable: \(reason); QEMU pid \(entry.domain.status.qemuPid) runs on until a new vmshim run reattaches")
        publish(.unreachable, entry.domain)
    }

    private func markGone(_ uuid: String, reason: String) {
        guard var entry = entries[uuid] else { return }
        entry.persisted = nil
        entry.domain.status.state = .crashed
        entry.domain.status.reason = "gone"
        entry.domain.status.message = "domain '\(entry.domain.identity.name)' is gone: \(reason)"
        entry.endedAt = .now
        entries[uuid] = entry
        store?.remove(uuid)
        logger.warning("'\(entry.domain.identity.name)' is gone: \(reason)")
        publish(.gone, entry.domain)
    }

    static func qemuAlive(_ status: Vmshim_Registrar_V1_DomainStatus, bootID: String) -> Bool {
        guard status.qemuPid > 0 else { return false }
        return ProcessIdentity(pid: status.qemuPid, startTime: status.qemuStartTime, bootID: bootID).isAlive
    }

    // MARK: - Queries

    /// The UUIDs a ListDomains request selects, sorted by name: a plain
    /// name key, since reading `domain.identity` in the comparator would
    /// copy the whole identity message each time.
    private func selection(_ request: Vmshim_Registrar_V1_ListDomainsRequest) -> [String] {
        let states = Set(request.states)
        var selected: [(name: String, uuid: String)] = []
        selected.reserveCapacity(entries.count)
        for (uuid, entry) in entries {
            if !states.isEmpty, !states.contains(entry.domain.status.state) { continue }
            if !request.nameContains.isEmpty, !entry.name.contains(request.nameContains) { continue }
            selected.append((entry.name, uuid))
        }
        selected.sort { $0.name < $1.name }
        return selected.map(\.uuid)
    }

    func list(_ request: Vmshim_Registrar_V1_ListDomainsRequest) -> [Domain] {
        selection(request).compactMap { uuid in
            guard var domain = entries[uuid]?.domain else { return nil }
            if request.withoutResources { domain.clearResources() }
            return domain
        }
    }

    /// ListDomains from cached encodings (CachedListDomainsService).
    func encodedList(_ request: Vmshim_Registrar_V1_ListDomainsRequest) throws -> EncodedDomainList {
        guard !request.withoutResources else {
            return EncodedDomainList(domains: try list(request).map { try $0.serializedBytes() })
        }
        return EncodedDomainList(domains: try selection(request).compactMap { uuid in
            if let cached = entries[uuid]?.encoded { return cached }
            guard let domain = entries[uuid]?.domain else { return nil }
            let bytes: [UInt8] = try domain.serializedBytes()
            entries[uuid]?.encoded = bytes
            return bytes
        })
    }

    func domain(uuid: String?, name: String?) -> Domain? {
        if let uuid { return entries[uuid.lowercased()]?.domain }
        guard let name else { return nil }
        // A name can be reused once a domain ended: the live one wins.
        let matches = entries.values.filter { $0.name == name }
        return (matches.first { $0.endedAt == nil } ?? matches.first)?.domain
    }

    var allDomains: [Domain] { entries.values.map(\.domain) }

    var knownUUIDs: Set<String> { Set(entries.keys) }

    func subscribe() -> AsyncStream<RegistrarEvent> { events.subscribe() }

    // MARK: - Internals

    /// Queues the domain's record when what it holds changed: a shim
    /// re-registering after a restart rewrites nothing.
    private func persist(_ uuid: String) {
        guard let store, var entry = entries[uuid], entry.endedAt == nil else { return }
        let record = RecordStore.Record(domain: entry.domain, bootID: bootID, sameNamespace: entry.sameNamespace)
        let content = record.durableContent
        guard entry.persisted != content else { return }
        entry.persisted = content
        entries[uuid] = entry
        store.save(record)
    }

    private func publish(_ kind: RegistrarEvent.Kind, _ domain: Domain) {
        eventSequence += 1
        var event = RegistrarEvent()
        event.sequence = eventSequence
        event.timestampUnixMicros = Self.nowMicros()
        event.uuid = domain.identity.uuid
        event.name = domain.identity.name
        event.kind = kind
        event.state = domain.status.state
        event.reason = domain.status.reason
        events.yield(event)
    }

    static func nowMicros() -> Int64 { RegistrationWire.nowMicros() }
}

enum RegistrarVersion {
    static let current = VMShimVersion.current
    static let apis = ["vmshim.registrar.v1"]
}
