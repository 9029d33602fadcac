import Foundation
import Logging
import Synchronization
import Testing
@testable import Registrar
@testable import ShimKit

/// The registry's rules without sockets: who may hold a UUID, what a
/// restart restores, when a waiting domain turns unreachable or gone.
struct RegistryTests {
    static let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    static func snapshot(uuid: String, name: String, shimPID: Int32, qemuPID: Int32 = 0, qemuStart: UInt64 = 0, epoch: UInt64 = 1)
        -> Vmshim_Registrar_V1_Snapshot
    {
        var snapshot = Vmshim_Registrar_V1_Snapshot()
        snapshot.epoch = epoch
        snapshot.identity.uuid = uuid
        snapshot.identity.name = name
        snapshot.identity.shimPid = shimPID
        snapshot.identity.vcpus = 2
        snapshot.identity.memoryKib = 1024
        snapshot.status.state = .running
        snapshot.status.qemuPid = qemuPID
        snapshot.status.qemuStartTime = qemuStart
        return snapshot
    }

    static let uuid = "8f0a2b44-4a5e-4c55-9d0b-3f1a2b3c4d5e"

    func box() -> Outbox { Outbox { _ in } }

    @Test func aSecondLiveShimIsRefusedAndTheSameShimMayReRegister() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        let me = getpid()  // a live process stands in for the holding shim
        let first = await registry.newSession()
        _ = try await registry.register(Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me), session: first, peerPID: me, requests: box())
        let second = await registry.newSession()
        await #expect(throws: ShimError.self) {
            _ = try await registry.register(
                Self.snapshot(uuid: Self.uuid.uppercased(), name: "a", shimPID: 1), session: second, peerPID: 1, requests: box())
        }
        // The same shim (same peer) reconnecting with a newer epoch replaces its stale stream.
        _ = try await registry.register(
            Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me, epoch: 2), session: second, peerPID: me, requests: box())
        let domains = await registry.list(.init())
        #expect(domains.count == 1 && domains[0].epoch == 2)
        // An older epoch from the same shim is refused.
        let third = await registry.newSession()
        await #expect(throws: ShimError.self) {
            _ = try await registry.register(
                Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me, epoch: 1), session: third, peerPID: me, requests: box())
        }
    }

    /// Registered is queued by the registry itself, so a host request sent
    /// before the stream's task flushes still goes down after it; a request
    /// to a stream that broke fails at once.
    @Test func registeredGoesDownFirstAndRequestsToABrokenStreamFail() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        let me = getpid()
        let written = Mutex<[String]>([])
        let outbox = Outbox { message in
            written.withLock {
                switch message.kind {
                case .registered: $0.append("registered")
                case .request: $0.append("request")
                default: $0.append("other")
                }
            }
        }
        let session = await registry.newSession()
        _ = try await registry.register(Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me), session: session, peerPID: me, requests: outbox)
        let waiting = Task { try await registry.request(uuid: Self.uuid) { $0.shutdown = .init() } }
        // Until the request is queued (a bound for a loaded machine, not a timing check).
        let deadline = ContinuousClock.now + .seconds(60)
        while await registry.pendingRequestCount == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        await outbox.flush()
        await outbox.idle()
        #expect(written.withLock { $0 } == ["registered", "request"])
        waiting.cancel()
        await registry.disconnected(uuid: Self.uuid, session: session)
        _ = try? await waiting.value

        let broken = Outbox { _ in throw ShimError(.unavailable, "broken pipe") }
        let second = await registry.newSession()
        _ = try await registry.register(
            Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me, epoch: 2), session: second, peerPID: me, requests: broken)
        await broken.flush()  // the write of Registered fails: the outbox closes
        await #expect(throws: ShimError.self) { _ = try await registry.request(uuid: Self.uuid) { $0.shutdown = .init() } }
    }

    @Test func aLiveHolderWaitingToReconnectStillHoldsItsUUID() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        let me = getpid()
        _ = try await registry.register(Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me), session: 1, peerPID: me, requests: box())
        await registry.disconnected(uuid: Self.uuid, session: 1)  // its stream dropped; the shim lives
        await #expect(throws: ShimError.self) {
            _ = try await registry.register(Self.snapshot(uuid: Self.uuid, name: "a", shimPID: 7), session: 2, peerPID: 7, requests: box())
        }
        // The holder itself comes back.
        _ = try await registry.register(
            Self.snapshot(uuid: Self.uuid, name: "a", shimPID: me, epoch: 2), session: 3, peerPID: me, requests: box())
        #expect(await registry.list(.init()).first?.connected == true)
    }

    @Test func dropsBeforeQEMUsPidAndDuringStopChangeNothing() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        var starting = Self.snapshot(uuid: Self.uuid, name: "a", shimPID: 1)
        starting.status.state = .starting
        _ = try await registry.register(starting, session: 1, peerPID: 1, requests: box())
        await registry.disconnected(uuid: Self.uuid, session: 1)
        #expect(await registry.list(.init()).first?.status.state == .starting, "no QEMU pid yet: the sweep decides later")
        let other = "00000000-0000-4000-8000-000000000003"
        _ = try await registry.register(
            Self.snapshot(uuid: other, name: "b", shimPID: 1, qemuPID: getpid(), qemuStart: ProcFS.startTime(pid: getpid()) ?? 0),
            session: 2, peerPID: 1, requests: box())
        await registry.beginStopping()
        await registry.disconnected(uuid: other, session: 2)
        let b = await registry.list(.init()).first { $0.identity.name == "b" }
        #expect(b?.status.state == .running && b?.connected == true, "a stopping registrar records no drops")
    }

    @Test func aDeadHolderDoesNotBlockItsSuccessor() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        let session = await registry.newSession()
        // pid 2^22+1 exceeds pid_max's default ceiling: never alive.
        let dead: Int32 = 4_194_305
        _ = try await registry.register(Self.snapshot(uuid: Self.uuid, name: "a", shimPID: dead), session: session, peerPID: dead, requests: box())
        let next = await registry.newSession()
        _ = try await registry.register(Self.snapshot(uuid: Self.uuid, name: "a", shimPID: 7), session: next, peerPID: 7, requests: box())
        #expect(await registry.list(.init()).first?.identity.shimPid == 7)
    }

    @Test func invalidSnapshotsNameTheField() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        do {
            _ = try await registry.register(Self.snapshot(uuid: "nope", name: "a", shimPID: 1), session: 1, peerPID: 1, requests: box())
            Issue.record("a bad UUID was accepted")
        } catch let error as ShimError {
            #expect(error.code == .invalidArgument && error.message.contains("snapshot.identity.uuid"))
        }
    }

    @Test func restoredDomainsWaitForTheGraceThenTurnUnreachableOrGone() async throws {
        let registry = Registry(store: nil, settings: .init(grace: .milliseconds(100)), logger: Self.logger)
        let me = ProcessIdentity.of(pid: getpid())
        var alive = Self.snapshot(uuid: Self.uuid, name: "alive", shimPID: 1, qemuPID: getpid(), qemuStart: me?.startTime ?? 0)
        alive.status.state = .paused
        let deadUUID = "00000000-0000-4000-8000-000000000001"
        let dead = Self.snapshot(uuid: deadUUID, name: "dead", shimPID: 1, qemuPID: getpid(), qemuStart: 1)  // wrong start time: pid reused
        func record(_ snapshot: Vmshim_Registrar_V1_Snapshot) -> RecordStore.Record {
            var domain = Domain()
            domain.identity = snapshot.identity
            domain.status = snapshot.status
            return RecordStore.Record(domain: domain, bootID: ProcFS.bootID, sameNamespace: true)
        }
        var oldBoot = record(Self.snapshot(uuid: "00000000-0000-4000-8000-000000000002", name: "old", shimPID: 1))
        oldBoot.bootID = "another-boot"
        await registry.restore([record(alive), record(dead), oldBoot].map { ($0, $0) })
        let restored = await registry.list(.init())
        #expect(restored.map(\.identity.name) == ["alive", "dead"], "a record from an earlier boot is dropped")
        #expect(restored.allSatisfy { $0.source == "record" && !$0.connected })
        await registry.sweep()
        let swept = await registry.list(.init())
        #expect(swept.first { $0.identity.name == "dead" }?.status.state == .crashed, "a QEMU that is gone is gone at once")
        #expect(swept.first { $0.identity.name == "alive" }?.status.state == .paused, "still within the grace")
        try await Task.sleep(for: .milliseconds(150))
        await registry.sweep()
        #expect(await registry.list(.init()).first { $0.identity.name == "alive" }?.status.state == .unreachable)
    }

    @Test func listFiltersByStateAndName() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        for index in 0..<3 {
            var snapshot = Self.snapshot(uuid: "00000000-0000-4000-8000-00000000000\(index)", name: "vm-\(index)", shimPID: Int32(100 + index))
            snapshot.status.state = index == 0 ? .paused : .running
            snapshot.resources.qemuRssKib = 5
            _ = try await registry.register(snapshot, session: UInt64(index + 1), peerPID: 0, requests: box())
        }
        var request = Vmshim_Registrar_V1_ListDomainsRequest()
        request.states = [.running]
        #expect(await registry.list(request).map(\.identity.name) == ["vm-1", "vm-2"])
        request.nameContains = "-2"
        request.withoutResources = true
        let filtered = await registry.list(request)
        #expect(filtered.map(\.identity.name) == ["vm-2"] && !filtered[0].hasResources)
        let accounting = HostAccounting.compute(await registry.allDomains, host: .init(cpus: 2, memoryTotalKiB: 2048))
        #expect(accounting.committedVcpus == 6 && accounting.vcpuOvercommit == 3 && accounting.memoryOvercommit == 1.5)
    }

    @Test func cachedListEncodingIsTheProtobufEncoding() async throws {
        let registry = Registry(store: nil, settings: .init(), logger: Self.logger)
        for index in 0..<40 {
            var snapshot = Self.snapshot(uuid: "00000000-0000-4000-8000-0000000000\(10 + index)", name: "vm-\(index)", shimPID: 1)
            // Long enough for multi-byte length prefixes.
            snapshot.identity.runDirectory = String(repeating: "r", count: index * 10)
            _ = try await registry.register(snapshot, session: UInt64(index + 1), peerPID: 0, requests: box())
        }
        let request = Vmshim_Registrar_V1_ListDomainsRequest()
        for _ in 0..<2 {  // the second round comes from the cache
            let bytes: [UInt8] = try EncodedDomainListSerializer().serialize(try await registry.encodedList(request))
            let decoded = try Vmshim_Registrar_V1_ListDomainsResponse(serializedBytes: bytes)
            #expect(decoded.domains == (await registry.list(request)))
        }
        // A change invalidates the cached encoding.
        var update = Vmshim_Registrar_V1_StateUpdate()
        update.status.state = .paused
        await registry.update(update, uuid: "00000000-0000-4000-8000-000000000010", session: 1)
        let bytes: [UInt8] = try EncodedDomainListSerializer().serialize(try await registry.encodedList(request))
        let decoded = try Vmshim_Registrar_V1_ListDomainsResponse(serializedBytes: bytes)
        #expect(decoded.domains.first { $0.identity.name == "vm-0" }?.status.state == .paused)
    }

    @Test func aRecordIsRefreshedFromItsShimsStatusFile() throws {
        let directory = try Fixtures.scratchDirectory("refresh")
        defer { FileIO.removeTree(directory) }
        var domain = Domain()
        domain.identity.uuid = Self.uuid
        domain.identity.name = "a"
        domain.identity.statusFile = directory + "/status.json"
        domain.status.state = .starting
        let record = RecordStore.Record(domain: domain, bootID: ProcFS.bootID, sameNamespace: true)
        #expect(RunDirectoryScan.refreshed(record).domain.status.state == .starting, "no status file: unchanged")
        let qemu = ProcessIdentity(pid: 4242, startTime: 99, bootID: ProcFS.bootID)
        var status = StatusFile(
            name: "a", uuid: Self.uuid, state: .paused, reason: "user", shim: qemu, shimVersion: "0", qemu: qemu,
            qemuBinary: "q", qemuVersion: nil, qmpSocket: "", controlSocket: "", logFile: "", startedAt: 0, updatedAt: 0,
            liveXML: "")
        try status.write(to: domain.identity.statusFile)
        let refreshed = RunDirectoryScan.refreshed(record).domain.status
        #expect(refreshed.state == .paused && refreshed.reason == "user" && refreshed.qemuPid == 4242 && refreshed.qemuStartTime == 99)
        // Another domain's file (a reused name) is not taken.
        status.uuid = "00000000-0000-4000-8000-000000000009"
        try status.write(to: domain.identity.statusFile)
        #expect(RunDirectoryScan.refreshed(record).domain.status.qemuPid == 0)
    }

    @Test func recordsRoundTripAndRefuseOtherVersions() throws {
        var domain = Domain()
        domain.identity.uuid = Self.uuid
        domain.identity.name = "a\"b"
        domain.status.qemuPid = 42
        domain.resources.qemuRssKib = 9
        let text = RecordStore.encode(.init(domain: domain, bootID: "b", sameNamespace: true))
        let back = try RecordStore.decode(text, file: "x.json")
        #expect(back.domain.identity.name == "a\"b" && back.domain.status.qemuPid == 42 && back.bootID == "b" && back.sameNamespace)
        #expect(back.domain.resources.qemuRssKib == 0, "figures are not durable state")
        #expect(throws: ShimError.self) { try RecordStore.decode(text.replacingOccurrences(of: "\"recordVersion\":1", with: "\"recordVersion\":9"), file: "x.json") }
        #expect(throws: ShimError.self) { try RecordStore.decode("{", file: "x.json") }
    }

    @Test func prometheusTextUsesBaseUnitsAndEscapesLabels() {
        var domain = Domain()
        domain.identity.uuid = Self.uuid
        domain.identity.name = "we\"ird\\name"
        domain.identity.memoryKib = 2
        domain.status.state = .running
        domain.resources.qemuCpuTimeMicros = 1_500_000
        var disk = Vmshim_Registrar_V1_DiskAccounting()
        disk.target = "vda"
        disk.readBytes = 7
        domain.resources.disks = [disk]
        let text = PrometheusText.render([domain], host: .init(cpus: 4, memoryTotalKiB: 8))
        let labels = "{name=\"we\\\"ird\\\\name\",uuid=\"\(Self.uuid)\"}"
        #expect(text.contains("vmshim_domain_memory_bytes\(labels) 2048\n"))
        #expect(text.contains("vmshim_domain_cpu_seconds_total\(labels) 1.5\n"))
        #expect(text.contains("vmshim_domain_disk_read_bytes_total{name=\"we\\\"ird\\\\name\",uuid=\"\(Self.uuid)\",target=\"vda\"} 7\n"))
        #expect(text.contains("# TYPE vmshim_domain_cpu_seconds_total counter\n"))
        #expect(text.contains("vmshim_host_memory_bytes 8192\n"))
        #expect(text.contains("vmshim_registrar_domains{state=\"running\"} 1\n"))
    }
}
