import CShimKit
import NIOPosix
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Owns one VM: launches (or reattaches to) QEMU, drives it over QMP, applies
/// libvirt's lifecycle actions, and reports its state.
///
/// Concurrency: the actor owns all mutable VM state. State-changing operations
/// take `operations` (one at a time, like libvirt's job lock) because the
/// actor is reentrant at every `await`; queries never take it. Destroy does not
/// wait for the lock: it kills QEMU, which ends whatever operation is waiting.
/// State follows QEMU's events (STOP, RESUME, SHUTDOWN, …), so commands sent
/// through QMP passthrough are reflected too.
public actor VMSupervisor {
    public let config: ShimConfiguration
    let logger: Logger
    public private(set) var spec: DomainSpec
    /// The XML the live definition is rendered from (the user's, or the
    /// running definition when reattached).
    private var sourceXML: String
    private var sourceName: String

    private(set) var state: VMState = .starting
    private(set) var reason = "booting"
    private var process: ProcessHandle?
    private var qemuIdentity: ProcessIdentity?
    private var qmp: QMPClient?
    private var reattached = false
    private var startedAt: Int64
    private var runtime = LiveXML.Runtime()
    private var qemuVersion = ""
    private var createdSockets: [String] = []
    /// Ports on libvirt networks this VM's interfaces hold.
    private var networkPorts: [LibvirtNetworks.Port] = []
    /// Ports a dead predecessor's QEMU held, given back before a new start.
    private var stalePorts: [LibvirtNetworks.Port] = []
    /// macvtap links of `<interface type='direct'>`: they outlive QEMU.
    private var macvtapLinks: [String] = []
    private var lock: RunDirectoryLock?
    private var reattachCandidate: StatusFile?
    /// A QEMU this shim must not take down with it (lost monitor, failed reattach).
    private var leaveQEMURunning = false
    private let statusWriter: StatusWriter

    private let operations = AsyncLock()
    private let eventHub = Broadcast<VMEvent>(bufferLimit: 4096)
    private var eventSequence: UInt64 = 0

    private enum Intent { case none, shutdown, destroy, acpiReboot, save }
    private var intent = Intent.none
    /// Set from the moment a managed save starts until QEMU has quit (or the
    /// save was undone); written to the status file for a successor shim.
    private var pendingSave: StatusFile.PendingSave?
    /// QEMU's dedicated cgroup (absent with register='none'); removed when QEMU has ended.
    private var cgroup: Cgroups.Placement?
    private var pendingPauseReason: String?
    private var lastShutdownReason: String?
    private var guestPoweredOff = false
    private var guestPanicked = false
    private var outcome: ShimOutcome?
    private var outcomeWaiters: [CheckedContinuation<ShimOutcome, Never>] = []
    private var backgroundTasks: [Task<Void, Never>] = []

    /// Parses, validates and prepares the domain. Nothing is started and
    /// nothing is created on the host; a bad XML fails here.
    public init(config: ShimConfiguration, xml: String, spec parsedSpec: DomainSpec? = nil, logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.sourceXML = xml
        self.sourceName = config.xmlPath
        // The run directory is removed when the VM ends: it must not be the
        // directory that keeps every domain's QEMU log.
        let logDirectory = FileIO.normalizedPath(config.logDirectory)
        let runPath = FileIO.normalizedPath(config.runDirectory.path)
        guard logDirectory != runPath, !logDirectory.hasPrefix(runPath + "/") else {
            throw ShimError(
                .invalidArgument,
                "domain '\(config.runDirectory.name)': its run directory \(runPath) would hold the log directory \(logDirectory); pass --log-dir elsewhere or rename the domain")
        }
        let parsed = try parsedSpec ?? DomainParser(file: config.xmlPath).parse(xml).spec
        self.spec = try VMSupervisor.prepare(parsed, file: config.xmlPath, runDirectory: config.runDirectory)
        self.startedAt = Int64(time(nil))
        self.statusWriter = StatusWriter(path: config.runDirectory.statusFile)
    }

    static func prepare(_ spec: DomainSpec, file: String, runDirectory: RunDirectory, live: Bool = false) throws -> DomainSpec {
        try DomainDefaults(
            file: file,
            environment: DomainDefaults.Environment(
                runDirectory: runDirectory, freeDisplayPort: HostPorts.freeDisplayPort, isLiveDefinition: live)
        ).apply(spec)
    }

    // MARK: - Queries (never locked)

    public var status: VMStatus {
        VMStatus(
            name: spec.name, uuid: spec.uuid.description, state: state, reason: reason, shimPID: getpid(),
            qemuPID: qemuIdentity?.pid ?? 0, qemuStartTime: qemuIdentity?.startTime ?? 0,
            qmpSocket: config.runDirectory.qmpSocket, controlSocket: config.runDirectory.controlSocket,
            logFile: config.logFile, startedAt: startedAt, vcpus: spec.vcpus.current, memoryKiB: spec.memory.currentKiB,
            charDevices: runtime.charDevicePaths.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
            reattached: reattached, liveXML: liveXML(), qemuVersion: qemuVersion, qemuBinary: spec.emulator)
    }

    /// What registration with the registrar reports (no live XML: cheap).
    public var registrationFacts: RegistrationFacts {
        RegistrationFacts(
            name: spec.name, uuid: spec.uuid.description, state: state, reason: reason,
            // While reattaching, the QEMU found in the run directory.
            qemuPID: (qemuIdentity ?? reattachCandidate?.qemu)?.pid ?? 0,
            qemuStartTime: (qemuIdentity ?? reattachCandidate?.qemu)?.startTime ?? 0, startedAt: startedAt,
            reattached: reattached || reattachCandidate != nil, vcpusMax: spec.vcpus.maximum, vcpus: spec.vcpus.current,
            memoryKiB: spec.memory.currentKiB, maxMemoryKiB: spec.memory.totalKiB, qemuVersion: qemuVersion,
            qemuBinary: spec.emulator, logFile: config.logFile, cgroup: cgroup?.directories.first ?? "",
            disks: spec.devices.disks.map { (target: $0.targetDev, alias: $0.alias, source: $0.source ?? "") })
    }

    /// A query-* command for accounting; never waits for the operation lock.
    public func query(_ command: String, _ arguments: JSONObject? = nil) async throws -> JSONValue {
        guard command.hasPrefix("query-") else {
            throw ShimError(.invalidArgument, "'\(command)' is not a query; accounting runs query-* commands only")
        }
        return try await monitor().execute(command, arguments)
    }

    public func subscribe() -> AsyncStream<VMEvent> { eventHub.subscribe() }

    /// Subscribes and returns where the VM is now, in one actor turn: the
    /// snapshot carries the sequence of the last event published, so every
    /// event in the stream is newer than it and none is missed in between.
    public func subscribeWithSnapshot() -> (snapshot: VMEvent, events: AsyncStream<VMEvent>) {
        let events = eventHub.subscribe()
        let snapshot = VMEvent(sequence: eventSequence, timestampMicros: Self.nowMicros(), kind: .lifecycle(state: state, reason: reason))
        return (snapshot, events)
    }

    func liveXML() -> String {
        (try? LiveXML.render(source: sourceXML, file: sourceName, spec: spec, runtime: runtime)) ?? sourceXML
    }

    private func statusFile() -> StatusFile {
        StatusFile(
            name: spec.name, uuid: spec.uuid.description, state: state, reason: reason,
            shim: ProcessIdentity.of(pid: getpid()) ?? ProcessIdentity(pid: getpid(), startTime: 0, bootID: ProcFS.bootID),
            shimVersion: config.version, qemu: qemuIdentity, qemuBinary: spec.emulator,
            qemuVersion: qemuVersion.isEmpty ? nil : qemuVersion, qmpSocket: config.runDirectory.qmpSocket,
            controlSocket: config.runDirectory.controlSocket, logFile: config.logFile, startedAt: startedAt,
            updatedAt: Int64(time(nil)), liveXML: liveXML(), pendingSave: pendingSave,
            cgroupDirectories: cgroup?.directories ?? [])
    }

    private func writeStatus() async {
        statusWriter.submit(statusFile())
        await statusWriter.flush()
        if let error = statusWriter.lastError {
            logger.error("cannot write the status file \(config.runDirectory.statusFile): \(error)")
        }
    }

    private func setState(_ newState: VMState, _ newReason: String) {
        guard newState != state || newReason != reason else { return }
        state = newState
        reason = newReason
        logger.info("state \(newState.rawValue) (\(newReason))")
        publish(.lifecycle(state: newState, reason: newReason))
        statusWriter.submit(statusFile())
    }

    private func publish(_ kind: VMEvent.Kind) {
        eventSequence += 1
        eventHub.yield(VMEvent(sequence: eventSequence, timestampMicros: Self.nowMicros(), kind: kind))
    }

    private static func nowMicros() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }

    // MARK: - Start

    /// Takes the run directory: locks it (so a second shim for the same
    /// domain fails at once), then either notes a live QEMU to reattach to or
    /// clears what a dead shim left behind. Call before serving the control
    /// socket, which lives in that directory.
    public func claimRunDirectory() throws {
        guard lock == nil else { return }
        lock = try RunDirectoryLock.acquire(config.runDirectory)
        if let previous = try readPreviousStatus() {
            if previous.qemu?.isAlive == true {
                reattachCandidate = previous
            } else {
                logger.notice("removing the stale run directory of a VM that is no longer running")
                stalePorts += LibvirtNetworks.ports(inLiveXML: previous.liveXML)
                Macvtap.removeStale(inLiveXML: previous.liveXML)
                cleanRunDirectoryFiles()
            }
        }
    }

    /// Launches QEMU, or reattaches when the run directory names a QEMU that
    /// is still this domain's. Either fully succeeds or leaves nothing behind
    /// (a live QEMU that could not be reattached is left untouched).
    public func start() async throws {
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try claimRunDirectory()
        if let previous = reattachCandidate, let qemu = previous.qemu, previous.state == .starting {
            // The previous shim died before the guest ever ran: like libvirt
            // with a domain caught mid-start, stop that QEMU and start afresh.
            logger.notice("stopping QEMU pid \(qemu.pid) left half-started by a previous vmshim")
            if let stale = ProcessHandle.attach(pid: qemu.pid), qemu.isAlive {
                _ = await stale.terminate(grace: config.destroyGrace)
            }
            stalePorts += LibvirtNetworks.ports(inLiveXML: previous.liveXML)
            Macvtap.removeStale(inLiveXML: previous.liveXML)
            cleanRunDirectoryFiles()
        } else if let previous = reattachCandidate, let qemu = previous.qemu {
            do {
                try await reattach(previous, qemu: qemu)
            } catch {
                leaveQEMURunning = qemu.isAlive
                throw error
            }
            return
        }
        // The dead run's ports, while this shim still knows them (its run directory is gone).
        await releaseStalePorts()
        try checkUUIDUnique()
        try await launch(restoring: try await managedSaveToRestore())
    }

    private func readPreviousStatus() throws -> StatusFile? {
        let path = config.runDirectory.statusFile
        guard FileIO.exists(path) else { return nil }
        do {
            return try StatusFile.read(from: path)
        } catch let error as ShimError where error.code == .unsupported {
            throw error
        } catch {
            // Without it we cannot tell whether this domain's QEMU still runs;
            // starting another one on the same disks would be far worse.
            throw ShimError(
                .invalidArgument,
                "\((error as? ShimError)?.message ?? "\(error)"); if no QEMU of domain '\(spec.name)' is running, remove \(path) and run again",
                cause: error)
        }
    }

    private func cleanRunDirectoryFiles() {
        for name in FileIO.listDirectory(config.runDirectory.path) where name != "lock" {
            FileIO.remove("\(config.runDirectory.path)/\(name)")
        }
    }

    /// A UUID names one guest: refuse a second live VM with the same one.
    private func checkUUIDUnique() throws {
        let root = config.runDirectory.root
        for name in FileIO.listDirectory(root) where name != config.runDirectory.name {
            let other = RunDirectory(root: root, name: name)
            guard let status = try? StatusFile.read(from: other.statusFile), status.uuid == spec.uuid.description,
                status.qemu?.isAlive == true
            else { continue }
            throw ShimError(
                .alreadyExists,
                "\(config.xmlPath): UUID \(spec.uuid) is already used by the running domain '\(status.name)' (\(other.path)); give this domain its own <uuid>")
        }
    }

    private func launch(restoring saved: SavedState? = nil) async throws {
        let runDirectory = config.runDirectory
        if let saved {
            // The saved definition is the hardware the saved state belongs to.
            spec = saved.spec
            sourceXML = saved.image.xml
            sourceName = saved.label
            setState(.starting, "restoring")
        }
        var phases = StartPhases()
        // Every image and backing layer, checked off the cooperative pool;
        // startupPolicy='optional' disks that are missing are left out.
        let storage = DiskStorage(file: config.xmlPath)
        let unchecked = spec
        var drops: [DiskStorage.Drop] = []
        if unchecked.devices.disks.contains(where: { $0.source != nil }) {
            (spec, drops) = try await NIOThreadPool.singleton.runIfActive { try storage.prepare(unchecked, coldBoot: saved == nil) }
        } else {
            (spec, drops) = try storage.prepare(unchecked, coldBoot: saved == nil)  // nothing to read: numbering only
        }
        if let firmware = spec.os.firmware {
            let owner = config.qemuCredentials
            try await NIOThreadPool.singleton.runIfActive { try NVRAMStore.prepare(firmware, owner: owner) }
        }
        phases.lap("disks")
        for drop in drops {
            let what = drop.reason == "missing-on-start" ? "starts with an empty tray" : "is left out of the guest"
            logger.warning("disk '\(drop.targetDev)' \(what) (startupPolicy='optional', \(drop.reason)): \(drop.why)")
            publish(.diskDropped(targetDev: drop.targetDev, alias: drop.alias, source: drop.source, reason: drop.reason))
        }
        guard access(spec.emulator, X_OK) == 0 else {
            throw ShimError(
                .invalidArgument,
                "\(config.xmlPath): the <emulator> \(spec.emulator) is not an executable file (install qemu-system-x86 or fix the path)")
        }
        if spec.cpu.mode == .hostModel {
            // libvirt's host-model, decided from what this QEMU offers now;
            // the live XML then shows the custom CPU it became.
            let report = try await QEMUCPUProbe.report(
                emulator: spec.emulator, accelerator: spec.virtType, directory: runDirectory.path)
            let expansion = try HostCPUModel.expand(report)
            spec.cpu = spec.cpu.resolvingHostModel(expansion)
            logger.info("host-model CPU: \(expansion.model) with \(expansion.features.count) features listed")
            phases.lap("cpu probe")
        }
        if spec.devices.interfaces.contains(where: { $0.kind == .network }) {
            // Ports on libvirt's networks, taken like libvirt's QEMU driver
            // takes them; given back if anything below fails.
            let (unattached, file) = (spec, config.xmlPath)
            let (attached, ports) = try await NIOThreadPool.singleton.runIfActive { try LibvirtNetworks.attach(unattached, file: file) }
            spec = attached
            networkPorts = ports
            phases.lap("network ports")
        }
        let plan: LaunchPlan
        var stream: SaveStream.Source?
        var cgroups: Cgroups?
        do {
            var zone = tm()
            var now = time(nil)
            localtime_r(&now, &zone)
            plan = try QEMUCommandLine.plan(
                spec,
                context: QEMUCommandLine.Context(
                    runDirectory: runDirectory, now: Int64(now), localTimeOffset: Int64(zone.tm_gmtoff),
                    incomingMigration: saved != nil))
            try FileIO.makeDirectories(config.logDirectory, mode: 0o755)
            if let saved {
                let path = saved.paths.image
                let image = saved.image
                let bypass = config.bypassCacheOnRestore
                stream = try await NIOThreadPool.singleton.runIfActive {
                    try SaveStream.openForRestore(path: path, image: image, bypassCache: bypass)
                }
            }
            // The VM's own cgroup, made before QEMU exists so a failure costs nothing.
            if spec.registerCgroup {
                let (name, tuning, vcpus) = (spec.name, spec.tuning, spec.vcpus.current)
                let made = try await NIOThreadPool.singleton.runIfActive { () throws -> (Cgroups, Cgroups.Placement) in
                    let host = try Cgroups.host()
                    return (host, try host.create(domain: name, tuning: tuning, vcpus: vcpus))
                }
                cgroups = made.0
                cgroup = made.1
            }
        } catch {
            await releaseNetworkPorts()
            throw error
        }
        phases.lap("plan+cgroup")
        let launched: QEMULauncher.Launched
        do {
            launched = try QEMULauncher.launch(
                plan: plan, spec: spec, logFile: config.logFile, shimVersion: config.version, incoming: stream?.takeDescriptorForQEMU(),
                runAs: config.qemuCredentials)
        } catch {
            await removeCgroup()
            await releaseNetworkPorts()
            throw error
        }
        process = launched.process
        qemuIdentity = launched.identity
        createdSockets = launched.createdSockets
        macvtapLinks = launched.macvtapLinks
        runtime.tapNames = launched.tapNames
        phases.lap("spawn")
        logger.info("QEMU started", metadata: ["pid": "\(launched.process.pid)"])
        // Record QEMU's pid (a shim that dies now must let the next one find
        // it) while the monitor handshake runs; newer writes supersede it.
        statusWriter.submit(statusFile())

        // Moving a process between cgroups can wait for an RCU grace period
        // per hierarchy (milliseconds on v1): done while QEMU initialises and
        // the monitor handshake runs, and finished before the guest runs, so
        // its memory is charged to the VM's cgroup. cgroup.procs moves every
        // thread QEMU has by then.
        var attaching: Task<Void, any Error>?
        if let cgroups, let placement = cgroup {
            let pid = launched.process.pid
            let logger = self.logger
            attaching = Task {
                let began = ContinuousClock.now
                try await NIOThreadPool.singleton.runIfActive { try cgroups.attach(pid: pid, to: placement) }
                logger.debug("moving QEMU into its cgroup took \(StartPhases.milliseconds(ContinuousClock.now - began)) ms")
            }
        }
        do {
            let client = try await connectMonitor(process: launched.process)
            phases.lap("monitor")
            qmp = client
            qemuVersion = client.greeting.versionString
            try await setUpBeforeStart(client)
            phases.lap("setup")
            try await attaching?.value
            phases.lap("cgroup-attach")
            // After the cgroup move: moving a thread into a v1 cpuset resets its affinity.
            try await pinThreads(client)
            try await runInterfaceScripts(tapNames: launched.tapNames)
            startWatching(client: client, process: launched.process)
            if let saved, let stream, let fd = plan.incomingMigrationFD {
                try await restoreState(client, saved: saved, stream: stream, fd: fd)
            } else if config.startPaused {
                setState(.paused, "user")
            } else {
                try await client.run(Cont())
                setState(.running, "booted")
            }
            await writeStatus()
            phases.lap(saved == nil ? "cont+status" : "restore+status")
            logger.debug("start took \(phases.summary)")
            Task { await self.learnCanonicalMachine() }
        } catch {
            _ = try? await attaching?.value
            await failStart(error)
            throw startError(error)
        }
    }

    /// `<interface type='ethernet'><script path>`, run as libvirt runs it
    /// (`script TAPNAME`) once the tap exists. QEMU already holds the tap but
    /// the guest's vCPUs have not run yet, so the guest sees the tap as the
    /// script left it. A failing script fails the start, as in libvirt.
    private func runInterfaceScripts(tapNames: [String: String]) async throws {
        for nic in spec.devices.interfaces {
            guard let script = nic.script, let tap = tapNames[nic.alias] else { continue }
            let logFD = open(config.logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard logFD >= 0 else { throw ShimError.system("cannot open the QEMU log \(config.logFile)") }
            let spawned: SpawnedProcess
            do {
                defer { close(logFD) }
                spawned = try Spawner.spawn(SpawnSpec(
                    executable: script, arguments: [script, tap],
                    environment: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], outputFD: logFD))
            } catch {
                throw ShimError(.invalidArgument, "interface '\(nic.alias)': cannot run its <script path='\(script)'>: \(error)", cause: error)
            }
            let process = ProcessHandle(spawned)
            guard let status = await process.waitForExit(timeout: .seconds(60)) else {
                _ = await process.terminate(grace: .seconds(1))
                throw ShimError(.timeout, "interface '\(nic.alias)': '\(script) \(tap)' did not finish within 60 s")
            }
            guard status == .exited(0) else {
                throw ShimError(
                    .invalidArgument,
                    "interface '\(nic.alias)': '\(script) \(tap)' failed (\(status)); its output is in \(config.logFile)")
            }
            logger.info("ran the interface script", metadata: ["script": "\(script)", "tap": "\(tap)"])
        }
    }

    /// Where a start's time goes, for `--log-level debug`.
    struct StartPhases {
        private var last = ContinuousClock.now
        private var laps: [(String, Duration)] = []

        mutating func lap(_ name: String) {
            let now = ContinuousClock.now
            laps.append((name, now - last))
            last = now
        }

        var summary: String {
            let total = laps.reduce(Duration.zero) { $0 + $1.1 }
            return "\(Self.milliseconds(total)) ms: " + laps.map { "\($0.0) \(Self.milliseconds($0.1))" }.joined(separator: ", ")
        }

        static func milliseconds(_ duration: Duration) -> String {
            let (seconds, attoseconds) = duration.components
            let tenths = seconds * 10_000 + attoseconds / 100_000_000_000_000
            return "\(tenths / 10).\(tenths % 10)"
        }
    }

    // MARK: - Managed save and restore

    /// A managed-save image that the start restores instead of booting.
    struct SavedState: Sendable {
        var paths: SaveImage.Paths
        var image: SaveImage
        /// The saved definition, parsed and prepared.
        var spec: DomainSpec
        /// Names the image in error messages about its XML.
        var label: String
    }

    /// The image to restore, if any: nil when there is none or --force-boot
    /// discards it. An image that cannot be restored is moved aside and the
    /// start fails, naming why; the next start boots cold.
    private func managedSaveToRestore() async throws -> SavedState? {
        let paths = SaveImage.Paths(directory: config.saveDirectory, domain: spec.name)
        if FileIO.exists(paths.partial) {
            // Holding the run directory lock, with no QEMU of ours running:
            // no save of this domain is in progress, so this one died.
            logger.notice("removing \(paths.partial), left by a managed save that did not finish")
            FileIO.remove(paths.partial)
        }
        guard FileIO.exists(paths.image) else { return nil }
        if config.forceBoot {
            logger.notice("--force-boot: discarding the managed save image \(paths.image) and booting cold")
            await Self.removeDurably(paths.image)
            return nil
        }
        let image: SaveImage
        do {
            image = try await NIOThreadPool.singleton.runIfActive { try SaveImage.read(path: paths.image) }
        } catch let damaged as SaveImage.Damaged {
            throw await keepAside(paths, why: "\(damaged)")
        }
        let label = "\(paths.image) (saved definition)"
        let parsed: DomainSpec
        do {
            parsed = try DomainParser(file: label).parse(image.xml).spec
        } catch {
            throw await keepAside(paths, why: "holds a domain XML vmshim cannot read: \((error as? ShimError)?.message ?? "\(error)")")
        }
        guard parsed.uuid == spec.uuid else {
            throw ShimError(
                .alreadyExists,
                "\(config.xmlPath): the managed save image \(paths.image) belongs to UUID \(parsed.uuid), but this domain '\(spec.name)' has UUID \(spec.uuid); restore it with its own XML, or use --force-boot to discard it")
        }
        let prepared = try VMSupervisor.prepare(parsed, file: label, runDirectory: config.runDirectory, live: true)
        logger.info("restoring domain '\(spec.name)' from \(paths.image) (\(image.streamLength) bytes, saved \(image.guestWasRunning ? "running" : "paused"))")
        return SavedState(paths: paths, image: image, spec: prepared, label: label)
    }

    /// unlink, then fsync of the directory, off the cooperative pool: a
    /// restored or discarded image must not come back after a host crash.
    private static func removeDurably(_ path: String) async {
        _ = try? await NIOThreadPool.singleton.runIfActive {
            FileIO.remove(path)
            FileIO.syncDirectory(of: path)
        }
    }

    /// Moves an image that cannot be restored to `NAME.save.corrupt` and
    /// returns the error that fails the start.
    private func keepAside(_ paths: SaveImage.Paths, why: String) async -> ShimError {
        // errno of the rename, 0 when it worked.
        let renameErrno: Int32 = (try? await NIOThreadPool.singleton.runIfActive { () -> Int32 in
            let result: Int32 = rename(paths.image, paths.corrupt) == 0 ? 0 : errno
            FileIO.syncDirectory(of: paths.image)
            return result
        }) ?? ECANCELED
        let fate = renameErrno == 0
            ? "it was moved to \(paths.corrupt)" : "it could not be moved aside (\(SystemError(renameErrno))); remove it"
        return ShimError(
            .invalidArgument,
            "cannot restore domain '\(spec.name)' from its managed save image: \(why); \(fate). Run again to boot the domain cold (its saved state is lost)")
    }

    /// Loads the saved state into the new QEMU and resumes the guest as it
    /// was saved. The image is deleted only once QEMU has all of it.
    private func restoreState(_ client: QMPClient, saved: SavedState, stream: SaveStream.Source, fd: Int32) async throws {
        let began = ContinuousClock.now
        let pump: Task<UInt64, any Error>? = stream.hasPump ? Task {
            try await NIOThreadPool.singleton.runIfActive { try stream.pump() }
        } : nil
        do {
            try await client.execute("migrate-incoming", ["uri": .string("fd:\(fd)")])
            try await waitForMigration(client, what: "restoring the saved state")
            _ = try await pump?.value
        } catch {
            // QEMU refused the stream (it usually exits: "load of migration
            // failed"), or the image could not be read: it will not restore.
            let why = client.isClosed
                ? "QEMU exited while loading it"
                : "QEMU could not load it (\((error as? ShimError)?.message ?? "\(error)"))"
            throw await keepAside(saved.paths, why: why)
        }
        await Self.removeDurably(saved.paths.image)
        let elapsed = ContinuousClock.now - began
        logger.info("restored the saved state in \(elapsed.shortDescription); removed \(saved.paths.image)")
        if saved.image.guestWasRunning, !config.startPaused {
            try await client.run(Cont())
            setState(.running, "restored")
        } else {
            setState(.paused, "restored")
        }
    }

    /// Polls `query-migrate` until the migration ends; throws QEMU's reason
    /// when it failed or was cancelled.
    private func waitForMigration(_ client: QMPClient, what: String) async throws {
        while true {
            let info = try await client.execute("query-migrate")
            switch info["status"]?.stringValue ?? "none" {
            case "completed":
                return
            case "failed", "cancelled":
                let why = info["error-desc"]?.stringValue ?? (info["status"]?.stringValue ?? "failed")
                throw ShimError(.qemuFailed, "\(what) failed: \(why)")
            default:
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    /// Managed save: pauses the guest, streams its state into
    /// `<save dir>/NAME.save`, then quits QEMU; the shim exits 0 and the next
    /// `vmshim run` restores it. A save that fails leaves the guest as it was.
    public func save(bypassCache: Bool, bandwidthMiBPerSecond: UInt64 = 0) async throws -> SaveResult {
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try requireAllowed(.save)
        let client = try monitor()
        let paths = SaveImage.Paths(directory: config.saveDirectory, domain: spec.name)
        try FileIO.makeDirectories(config.saveDirectory, mode: 0o700)
        guard !FileIO.exists(paths.image) else {
            throw ShimError(
                .alreadyExists, "domain '\(spec.name)' already has a managed save image \(paths.image); remove it first")
        }
        let began = ContinuousClock.now
        let wasRunning = state == .running
        let previousReason = reason
        let image = SaveImage(guestWasRunning: wasRunning, complete: false, streamLength: 0, createdAt: Int64(time(nil)), xml: liveXML())
        pendingSave = StatusFile.PendingSave(partialImage: paths.partial, image: paths.image, guestWasRunning: wasRunning)
        await writeStatus()
        var writer: SaveStream.Writer?
        var migrationStarted = false
        let length: UInt64
        do {
            if wasRunning {
                pendingPauseReason = "saving"
                try await client.run(Stop())
                setState(.paused, "saving")
            }
            let created = try await NIOThreadPool.singleton.runIfActive {
                try SaveStream.Writer(paths: paths, image: image, bypassCache: bypassCache)
            }
            writer = created
            // QEMU's default migration bandwidth is 32 MiB/s; libvirt lifts it for saves.
            let bandwidth = bandwidthMiBPerSecond == 0 ? UInt64(1) << 40 : bandwidthMiBPerSecond << 20
            try await client.execute("migrate-set-parameters", ["max-bandwidth": .number(bandwidth)])
            var pump: Task<UInt64, any Error>?
            if bypassCache {
                let ends = try SaveStream.makePipe()
                pump = Task {
                    defer { close(ends.read) }
                    return try await NIOThreadPool.singleton.runIfActive { try created.pump(from: ends.read) }
                }
                defer { close(ends.write) }  // QEMU holds its own copy once getfd returns
                try await client.passFD(ends.write, name: "vmshim-save")
            } else {
                try await client.passFD(created.descriptorForQEMU, name: "vmshim-save")
            }
            migrationStarted = true
            do {
                try await client.execute("migrate", ["uri": "fd:vmshim-save"])
            } catch {
                _ = try? await client.execute("closefd", ["fdname": "vmshim-save"])
                throw error
            }
            try await waitForMigration(client, what: "saving the guest's state")
            if let pump {
                length = try await pump.value
            } else {
                length = try created.writtenByQEMU()
            }
            try await NIOThreadPool.singleton.runIfActive {
                try created.finish(streamLength: length, createdAt: Int64(time(nil)))
            }
        } catch {
            if migrationStarted { _ = try? await client.execute("migrate_cancel") }
            if let writer { try? await NIOThreadPool.singleton.runIfActive { writer.discard() } }
            pendingSave = nil
            var message = "cannot save domain '\(spec.name)': \((error as? ShimError)?.message ?? "\(error)")"
            if wasRunning {
                do {
                    try await client.run(Cont())
                    setState(.running, "save-failed")
                    message += "; the guest runs on"
                } catch {
                    message += "; resuming the guest failed too (\(error)): it is paused"
                }
            } else {
                setState(.paused, previousReason)
                message += "; the guest stays paused"
            }
            await writeStatus()
            logger.error("\(message)")
            throw ShimError((error as? ShimError)?.code ?? .qemuFailed, message, cause: ShimError.wrap(error, .qemuFailed, "save"))
        }
        let elapsed = ContinuousClock.now - began
        logger.info("saved domain '\(spec.name)' to \(paths.image): \(length) bytes in \(elapsed.shortDescription)")
        intent = .save
        quitQEMU(reason: "saved to \(paths.image)")
        return SaveResult(imagePath: paths.image, streamBytes: length, duration: elapsed, guestWasRunning: wasRunning)
    }

    /// A shim that died during a managed save left QEMU paused (or still
    /// migrating) and the status file saying so. A save that got as far as
    /// renaming its image is finished (QEMU is quit); otherwise it is undone:
    /// the migration cancelled, the partial image removed, the guest resumed.
    private func recoverInterruptedSave(_ save: StatusFile.PendingSave, client: QMPClient) async throws {
        if let image = try? await NIOThreadPool.singleton.runIfActive({ try SaveImage.read(path: save.image) }), image.complete {
            logger.notice("the previous vmshim finished saving domain '\(spec.name)' to \(save.image) but did not stop QEMU: stopping it")
            pendingSave = save
            intent = .save
            quitQEMU(reason: "saved to \(save.image)")
            return
        }
        let status = try await client.execute("query-migrate")["status"]?.stringValue ?? "none"
        if ["setup", "active", "pre-switchover", "device", "cancelling"].contains(status) {
            _ = try? await client.execute("migrate_cancel")
        }
        do {
            try await waitForMigration(client, what: "the interrupted save")
        } catch {
            // Cancelled or failed: what we want.
        }
        FileIO.remove(save.partialImage)
        pendingSave = nil
        if save.guestWasRunning {
            try await client.run(Cont())
        }
        logger.notice("undid a managed save the previous vmshim did not finish: removed \(save.partialImage)\(save.guestWasRunning ? ", resumed the guest" : "")")
    }

    /// Races the monitor handshake against QEMU exiting, so a QEMU that
    /// refuses its command line fails the start at once with its own words.
    private func connectMonitor(process: ProcessHandle) async throws -> QMPClient {
        let path = config.runDirectory.qmpSocket
        let timeout = config.qmpTimeout
        let logger = self.logger
        return try await withThrowingTaskGroup(of: QMPClient?.self) { group in
            group.addTask { try await QMPClient.connect(path: path, timeout: timeout, logger: logger) }
            group.addTask {
                guard let status = await process.exitOrCancellation() else { return nil }
                throw ShimError(.qemuFailed, "QEMU exited during start-up (\(status))")
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let client = result { return client }
            }
            throw ShimError(.internalError, "monitor connection ended without a result")
        }
    }

    /// libvirt sets these over QMP before the vCPUs run: lifecycle actions the
    /// command line cannot express, the balloon target and stats period, and
    /// link states; it also learns the pty paths QEMU allocated.
    private func setUpBeforeStart(_ client: QMPClient) async throws {
        // Sent back to back and awaited together: QEMU runs them in order,
        // and the start pays one round trip instead of one per command.
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Panics pause the guest so on_crash decides; on_reboot=destroy
            // turns a guest reboot into a shutdown we can act on.
            let setAction = SetAction(reboot: spec.lifecycle.onReboot == .destroy ? "shutdown" : nil, panic: "pause")
            group.addTask { try await client.run(setAction) }
            if let balloon = spec.devices.memballoon, balloon.model == .virtio {
                if let period = balloon.statsPeriodSeconds {
                    let statsPeriod = QOMSet(
                        path: "/machine/peripheral/\(balloon.alias)", property: "guest-stats-polling-interval", value: .number(period))
                    group.addTask { try await client.run(statsPeriod) }
                }
                let target = Balloon(bytes: spec.memory.currentKiB * 1024)
                group.addTask { try await client.run(target) }
            }
            // libvirt applies <iotune> over QMP before the guest runs; a
            // virtio-blk disk's block backend sits on its virtio-backend child.
            for disk in spec.devices.disks where !disk.ioTune.isEmpty && disk.source != nil {
                let device = disk.bus == .virtio ? "/machine/peripheral/\(disk.alias)/virtio-backend" : disk.alias
                let throttle = BlockSetIOThrottle(device: device, limits: disk.ioTune, group: disk.ioTuneGroup)
                group.addTask { try await client.run(throttle) }
            }
            for nic in spec.devices.interfaces where !nic.linkUp {
                let name = nic.alias
                group.addTask { try await client.execute("set_link", ["name": .string(name), "up": false]) }
            }
            try await group.waitForAll()
        }
        try await refreshCharDevicePaths(client)
    }

    /// `<vcpupin>`/`<iothreadpin>` (and, when only `<emulatorpin>` is given,
    /// `<vcpu cpuset>` or every CPU for the vCPUs): QEMU was spawned with the
    /// emulator's CPUs, so its vCPU and iothreads move to theirs before the
    /// guest runs, as libvirt pins them.
    private func pinThreads(_ client: QMPClient) async throws {
        let pinning = spec.pinning
        guard !pinning.isEmpty else { return }
        let fallback = spec.vcpus.cpusetCPUs ?? ProcFS.onlineCPUs() ?? []
        func pin(_ thread: Int, _ cpus: [Int], _ what: String) throws {
            guard !cpus.isEmpty else { return }  // no pin and no known CPU list: leave it where it runs
            let set = cpus.map { Int32(clamping: $0) }
            guard cshim_set_thread_affinity(pid_t(clamping: thread), set, set.count) == 0 else {
                throw ShimError.system(
                    "cannot pin \(what) (thread \(thread)) to host CPUs \(cpus.map(String.init).joined(separator: ",")); check the cpuset names online CPUs")
            }
        }
        for cpu in try await client.run(QueryCPUsFast()) {
            try pin(cpu.threadID, pinning.vcpus[cpu.index] ?? fallback, "vCPU \(cpu.index)")
        }
        if !spec.iothreadIDs.isEmpty {
            for thread in try await client.run(QueryIOThreads()) {
                guard let id = Int(thread.id.dropFirst("iothread".count)) else { continue }
                try pin(thread.threadID, pinning.iothreads[id] ?? fallback, "iothread \(id)")
            }
        }
    }

    private func refreshCharDevicePaths(_ client: QMPClient) async throws {
        let all = spec.devices.serials + spec.devices.parallels + spec.devices.channels
        // Only a pty's path is chosen by QEMU; the others are ours.
        let chardevs = all.contains { $0.backend == .pty } ? try await client.run(QueryChardev()) : []
        for device in all {
            switch device.backend {
            case .pty:
                if let entry = chardevs.first(where: { $0.label == "char\(device.alias)" }), entry.filename.hasPrefix("pty:") {
                    runtime.charDevicePaths[device.alias] = String(entry.filename.dropFirst(4))
                }
            case .unixListen(let path), .unixConnect(let path, _):
                runtime.charDevicePaths[device.alias] = path
            case .file(let path, _):
                runtime.charDevicePaths[device.alias] = path
            case .null, .tcp, .udp, .spicevmc:
                break
            }
        }
    }

    /// Records which machine type QEMU chose for an alias like "pc", as
    /// libvirt writes pc-i440fx-7.2 into the definition.
    private func learnCanonicalMachine() async {
        guard let qmp else { return }
        do {
            let machines = try await qmp.execute("query-machines")
            for machine in machines.arrayValue ?? [] where machine["alias"]?.stringValue == spec.os.machine {
                runtime.canonicalMachine = machine["name"]?.stringValue
            }
            await writeStatus()
        } catch {
            logger.debug("query-machines failed: \(error)")
        }
    }

    /// QEMU's own output since launch, for error messages.
    private func qemuLogLines(_ count: Int = 8) -> [String] {
        let lines = FileIO.tail(config.logFile, lines: 200, maximumBytes: 65536)
        // Only what QEMU printed after our argv header.
        if let lastArgvLine = lines.lastIndex(where: { $0.hasPrefix("-msg ") || $0 == "-msg timestamp=on" }) {
            return Array(lines[(lastArgvLine + 1)...].suffix(count))
        }
        return Array(lines.suffix(count))
    }

    private func startError(_ error: any Error) -> ShimError {
        let lines = qemuLogLines()
        let base = ShimError.wrap(error, .qemuFailed, "starting QEMU")
        guard !lines.isEmpty else { return base }
        return ShimError(
            base.code == .qmpCommandFailed ? .qemuFailed : base.code,
            "\(config.xmlPath): QEMU failed to start domain '\(spec.name)': \(base.message)\nQEMU said:\n  "
                + lines.joined(separator: "\n  ") + "\n(full log: \(config.logFile))", cause: base)
    }

    /// Undo a half-done start: no QEMU, no sockets, no status file remain.
    private func failStart(_ error: any Error) async {
        logger.notice("start failed, undoing it: \((error as? ShimError)?.message.prefix(200) ?? "\(error)")")
        await qmp?.close()
        qmp = nil
        if let process {
            _ = await process.terminate(grace: .seconds(2))
        }
        for task in backgroundTasks { task.cancel() }
        for path in createdSockets { FileIO.remove(path) }
        Hugepages.removeDirectory(spec.memoryBacking.hugepageDirectory)
        FileIO.removeTree(config.runDirectory.memoryBackingDirectory)
        FileIO.remove(config.runDirectory.statusFile)
        qemuIdentity = nil
        await removeCgroup()
        await releaseNetworkPorts()
        removeMacvtapLinks()
    }

    private func removeMacvtapLinks() {
        for link in macvtapLinks { Macvtap.remove(link) }
        macvtapLinks = []
    }

    private func releaseStalePorts() async {
        guard !stalePorts.isEmpty else { return }
        networkPorts += stalePorts
        stalePorts = []
        await releaseNetworkPorts()
    }

    /// Gives the VM's libvirt network ports back once QEMU is gone; what
    /// cannot be deleted is logged.
    private func releaseNetworkPorts() async {
        let ports = networkPorts
        networkPorts = []
        guard !ports.isEmpty else { return }
        let failures = (try? await NIOThreadPool.singleton.runIfActive { LibvirtNetworks.release(ports) })
            ?? ports.map { "port \($0.uuid) on network '\($0.network)'" }
        for failure in failures {
            logger.warning("could not delete libvirt network \(failure); delete it with 'virsh net-port-delete'")
        }
    }

    /// Removes QEMU's cgroup once QEMU is gone; what cannot be removed is logged.
    private func removeCgroup() async {
        guard let placement = cgroup else { return }
        cgroup = nil
        let left = (try? await NIOThreadPool.singleton.runIfActive { Cgroups.remove(placement) }) ?? placement.directories
        if !left.isEmpty {
            logger.warning("could not remove the cgroup(s) \(left.joined(separator: ", ")) of domain '\(spec.name)'; remove them with rmdir")
        }
    }

    // MARK: - Reattach

    private func reattach(_ previous: StatusFile, qemu: ProcessIdentity) async throws {
        let runDirectory = config.runDirectory
        guard previous.uuid == spec.uuid.description else {
            throw ShimError(
                .alreadyExists,
                "\(config.xmlPath): domain '\(spec.name)' is already running with UUID \(previous.uuid), but this XML has UUID \(spec.uuid); destroy the running one first")
        }
        guard let handle = ProcessHandle.attach(pid: qemu.pid), qemu.isAlive else {
            throw ShimError(.unavailable, "QEMU pid \(qemu.pid) of domain '\(spec.name)' exited while reattaching; run again to start it")
        }
        logger.notice("reattaching to the running QEMU", metadata: ["pid": "\(qemu.pid)"])
        // The running definition wins over the file: it is what the guest has.
        if !previous.liveXML.isEmpty {
            let file = "\(runDirectory.statusFile) (live definition)"
            let parsed = try DomainParser(file: file).parse(previous.liveXML)
            spec = try VMSupervisor.prepare(parsed.spec, file: file, runDirectory: runDirectory, live: true)
            sourceXML = previous.liveXML
            sourceName = file
        }
        process = handle
        qemuIdentity = qemu
        reattached = true
        // The predecessor's libvirt network ports: given back when QEMU ends.
        networkPorts = spec.devices.interfaces.compactMap { nic in
            guard nic.kind == .network, let network = nic.network, let port = nic.networkPortID else { return nil }
            return LibvirtNetworks.Port(network: network, uuid: port)
        }
        macvtapLinks = Macvtap.links(inLiveXML: previous.liveXML).map(\.name)
        // The predecessor's cgroup: this shim removes it when QEMU ends.
        cgroup = previous.cgroupDirectories.isEmpty ? nil : Cgroups.Placement(directories: previous.cgroupDirectories)
        if previous.startedAt > 0 { startedAt = previous.startedAt }
        qemuVersion = previous.qemuVersion ?? ""

        // QEMU accepts one monitor client; it notices the dead shim's
        // connection closing and then accepts ours. Give it a few tries.
        var client: QMPClient?
        var lastError: (any Error)?
        for attempt in 0..<20 {
            do {
                client = try await QMPClient.connect(path: runDirectory.qmpSocket, timeout: .seconds(2), logger: logger)
                break
            } catch {
                lastError = error
                if !handle.isRunning { break }
                try await Task.sleep(for: .milliseconds(50 * (attempt + 1)))
            }
        }
        guard let client else {
            throw ShimError(
                .unavailable,
                "cannot reattach to QEMU pid \(qemu.pid) of domain '\(spec.name)' through \(runDirectory.qmpSocket): \(lastError.map { "\($0)" } ?? "no answer")",
                cause: lastError.map { ShimError.wrap($0, .unavailable, "reattach") })
        }
        qmp = client
        qemuVersion = client.greeting.versionString
        try await refreshCharDevicePaths(client)
        if let save = previous.pendingSave {
            try await recoverInterruptedSave(save, client: client)
        }
        let status = try await client.run(QueryStatus())
        startWatching(client: client, process: handle)
        switch status.status {
        case "running":
            setState(.running, "reattached")
        case "shutdown":
            setState(.paused, "shutdown")
            guestPoweredOff = true
            handleGuestPoweroff()
        case "guest-panicked":
            setState(.paused, "crashed")
            guestPanicked = true
            handlePanic()
        default:
            setState(.paused, previous.state == .paused ? previous.reason : status.status)
        }
        await writeStatus()
    }

    // MARK: - Watching QEMU

    private func startWatching(client: QMPClient, process: ProcessHandle) {
        backgroundTasks.append(Task { [weak self] in
            for await event in client.events {
                await self?.handle(event)
            }
            await self?.monitorClosed()
        })
        backgroundTasks.append(Task { [weak self] in
            let status = await process.waitForExit()
            await self?.qemuExited(status)
        })
    }

    private func handle(_ event: QMPEvent) {
        publish(.qmp(event))
        switch event.kind {
        case .stop:
            if state == .running || state == .shuttingDown || state == .starting {
                let pauseReason = pendingPauseReason ?? "user"
                if state == .shuttingDown, pendingPauseReason == nil { return }
                setState(.paused, pauseReason)
            }
        case .resume:
            pendingPauseReason = nil
            if state == .paused || state == .crashed {
                setState(.running, "unpaused")
            }
        case .shutdown(_, let cause):
            // The first cause explains the end: the quit vmshim sends after a
            // guest-reset adds a host-qmp-quit that must not replace it.
            if lastShutdownReason == nil || cause != "host-qmp-quit" { lastShutdownReason = cause }
            switch cause {
            case "guest-shutdown":
                guestPoweredOff = true
                pendingPauseReason = "shutdown"
                handleGuestPoweroff()
            case "guest-reset":
                // on_reboot=destroy: set-action turned the guest's reboot into this shutdown.
                pendingPauseReason = "shutdown"
                logger.info("the guest rebooted and on_reboot is destroy")
                quitQEMU(reason: "on_reboot=destroy")
            case "guest-panic":
                guestPanicked = true
                handlePanic()
            default:
                break  // host-qmp-quit, host-signal, …: QEMU is exiting
            }
        case .guestPanicked:
            guestPanicked = true
            pendingPauseReason = "crashed"
            handlePanic()
        case .blockIOError(_, _, _, let action, _):
            if action == "stop" { pendingPauseReason = "ioerror" }
        case .reset(let guest, _):
            if guest, guestPanicked, spec.lifecycle.onCrash == .restart { guestPanicked = false }
        default:
            break
        }
    }

    private func handleGuestPoweroff() {
        switch intent {
        case .acpiReboot:
            intent = .none
            guestPoweredOff = false
            restartGuest(reason: "rebooted")
        case .shutdown, .destroy, .save:
            quitQEMU(reason: "shutdown requested")
        case .none:
            switch spec.lifecycle.onPoweroff {
            case .restart:
                guestPoweredOff = false
                restartGuest(reason: "on_poweroff=restart")
            default:
                quitQEMU(reason: "the guest powered off")
            }
        }
    }

    private func handlePanic() {
        logger.error("the guest panicked (on_crash=\(spec.lifecycle.onCrash.rawValue))")
        setState(.crashed, "panicked")
        switch spec.lifecycle.onCrash {
        case .restart:
            restartGuest(reason: "on_crash=restart")
        default:
            quitQEMU(reason: "on_crash=destroy")
        }
    }

    /// Hardware reset and run: how libvirt restarts a guest without a new QEMU.
    private func restartGuest(reason: String) {
        guard let qmp else { return }
        Task {
            do {
                try await qmp.run(SystemReset())
                try await qmp.run(Cont())
                self.afterRestart(reason)
            } catch {
                self.logger.error("restarting the guest (\(reason)) failed: \(error); destroying it")
                self.quitQEMU(reason: "restart failed")
            }
        }
    }

    private func afterRestart(_ why: String) {
        guestPanicked = false
        setState(.running, why)
    }

    /// Asks QEMU to exit; falls back to signals if the monitor does not answer.
    private func quitQEMU(reason: String) {
        logger.info("stopping QEMU: \(reason)")
        let qmp = self.qmp
        let process = self.process
        let grace = config.destroyGrace
        Task {
            do {
                try await qmp?.run(Quit(), timeout: .seconds(5))
            } catch {
                _ = await process?.terminate(grace: grace)
            }
            if let process, await process.waitForExit(timeout: .seconds(15)) == nil {
                _ = await process.terminate(grace: grace)
            }
        }
    }

    private func monitorClosed() async {
        guard let process, outcome == nil else { return }
        if await process.waitForExit(timeout: .seconds(5)) != nil { return }  // qemuExited reports it
        logger.error("lost the QMP monitor while QEMU (pid \(process.pid)) still runs")
        finish(
            ShimOutcome(
                exitCode: ShimOutcome.Code.monitorLost, state: state, reason: "monitor-lost",
                message: "lost QEMU's monitor; QEMU (pid \(process.pid)) was left running: run vmshim again for domain '\(spec.name)' to reattach"))
    }

    private func qemuExited(_ status: ExitStatus) async {
        await qmp?.close()
        let result: ShimOutcome
        if intent == .save, let save = pendingSave {
            result = ShimOutcome(
                exitCode: 0, state: .shutoff, reason: "saved",
                message: "domain '\(spec.name)' was saved to \(save.image); run it again to restore it")
        } else if guestPanicked {
            result = ShimOutcome(
                exitCode: ShimOutcome.Code.guestPanicked, state: .crashed, reason: "panicked",
                message: "the guest of domain '\(spec.name)' panicked and on_crash is destroy")
        } else if guestPoweredOff {
            let how = intent == .shutdown ? "was shut down on request" : "was shut down by its guest"
            result = ShimOutcome(exitCode: 0, state: .shutoff, reason: "shutdown", message: "domain '\(spec.name)' \(how)")
        } else if intent == .destroy {
            result = ShimOutcome(exitCode: 0, state: .shutoff, reason: "destroyed", message: "domain '\(spec.name)' was destroyed")
        } else if intent == .shutdown {
            result = ShimOutcome(
                exitCode: 0, state: .shutoff, reason: "shutdown",
                message: "domain '\(spec.name)' did not power off in time and was stopped")
        } else if let cause = lastShutdownReason {
            let why = cause == "guest-reset" ? "the guest rebooted and on_reboot is destroy"
                : cause == "host-qmp-quit" ? "QEMU quit on a QMP command" : "QEMU was stopped from the host (\(cause))"
            result = ShimOutcome(exitCode: 0, state: .shutoff, reason: cause == "guest-reset" ? "shutdown" : "destroyed", message: "domain '\(spec.name)' ended: \(why)")
        } else {
            let lines = qemuLogLines(10)
            var message = "QEMU (pid \(process?.pid ?? 0)) of domain '\(spec.name)' exited unexpectedly: \(status)"
            if lines.isEmpty {
                message += "; QEMU wrote nothing to its log (\(config.logFile))"
            } else {
                message += "\nlast QEMU log lines (\(config.logFile)):\n  " + lines.joined(separator: "\n  ")
            }
            result = ShimOutcome(exitCode: ShimOutcome.Code.qemuCrashed, state: .crashed, reason: "crashed", message: message)
        }
        setState(result.state, result.reason)
        finish(result)
    }

    private func finish(_ result: ShimOutcome) {
        guard outcome == nil else { return }
        outcome = result
        for waiter in outcomeWaiters { waiter.resume(returning: result) }
        outcomeWaiters.removeAll()
        eventHub.finish()
    }

    /// Suspends until the VM has ended (or the shim lost it); returns how.
    public func waitForEnd() async -> ShimOutcome {
        if let outcome { return outcome }
        return await withCheckedContinuation { outcomeWaiters.append($0) }
    }

    /// Removes the run directory (after the control server has stopped), unless
    /// QEMU is still running and a new shim must find it: then only the
    /// control socket goes.
    public func cleanUp() async {
        for task in backgroundTasks { task.cancel() }
        if leaveQEMURunning || outcome?.exitCode == ShimOutcome.Code.monitorLost {
            // The next shim reads this file to reattach: make it current.
            await writeStatus()
            await statusWriter.close()
            FileIO.remove(config.runDirectory.controlSocket)
            FileIO.remove(config.runDirectory.readOnlyControlSocket)
        } else {
            await statusWriter.close()
            config.runDirectory.remove()
            Hugepages.removeDirectory(spec.memoryBacking.hugepageDirectory)
            await removeCgroup()
            await releaseNetworkPorts()
            await releaseStalePorts()
            removeMacvtapLinks()
        }
        lock = nil
    }

    // MARK: - Operations

    private func requireAllowed(_ operation: VMOperation) throws {
        guard state.allows(operation) else {
            throw ShimError(
                .invalidState, "cannot \(operation.rawValue) domain '\(spec.name)': it is \(state.rawValue) (\(reason))")
        }
    }

    private func monitor() throws -> QMPClient {
        guard let qmp, !qmp.isClosed else {
            throw ShimError(.unavailable, "the QMP monitor of domain '\(spec.name)' is not connected")
        }
        return qmp
    }

    public func pause() async throws {
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try requireAllowed(.pause)
        pendingPauseReason = "user"
        try await monitor().run(Stop())
        if state == .running { setState(.paused, "user") }
    }

    public func resume() async throws {
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try requireAllowed(.resume)
        try await monitor().run(Cont())
        if state == .paused || state == .crashed { setState(.running, "unpaused") }
    }

    /// Presses the power button and waits up to `timeout` for the guest to
    /// power off. An explicit shutdown always ends the VM, whatever on_poweroff
    /// says (that action governs shutdowns the guest starts itself).
    public func shutdown(timeout: Duration?, forceAfterTimeout: Bool, wait: Bool = true) async throws {
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try requireAllowed(.shutdown)
        let previous = (state, reason)
        let client = try monitor()
        intent = .shutdown
        setState(.shuttingDown, "user")
        do {
            try await client.run(SystemPowerdown())
        } catch {
            intent = .none
            setState(previous.0, previous.1)
            throw error
        }
        guard wait, let process else { return }
        let limit = timeout ?? config.shutdownTimeout
        // Wait for the outcome, not just the exit, so the caller sees "shutoff".
        if await process.waitForExit(timeout: limit) != nil {
            _ = await waitForEnd()
            return
        }
        if forceAfterTimeout {
            logger.warning("the guest did not power off within \(limit.shortDescription); quitting QEMU")
            quitQEMU(reason: "shutdown timeout")
            _ = await waitForEnd()
            return
        }
        intent = .none
        if state == .shuttingDown { setState(previous.0, previous.1) }
        throw ShimError(
            .timeout,
            "domain '\(spec.name)' did not power off within \(limit.shortDescription); does the guest handle the ACPI power button? Use destroy to stop it at once")
    }

    public enum RebootMode: Sendable { case acpi, reset }

    public func reboot(mode: RebootMode) async throws {
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try requireAllowed(.reboot)
        let client = try monitor()
        switch mode {
        case .acpi:
            intent = .acpiReboot
            do {
                try await client.run(SystemPowerdown())
            } catch {
                intent = .none
                throw error
            }
        case .reset:
            try await client.run(SystemReset())
        }
    }

    /// Ends QEMU now: SIGTERM, then SIGKILL after the grace period. Does not
    /// queue behind a running operation (a stuck shutdown must be stoppable).
    public func destroy(grace: Duration? = nil) async throws {
        try requireAllowed(.destroy)
        guard let process else { throw ShimError(.invalidState, "domain '\(spec.name)' has no QEMU process") }
        intent = .destroy
        _ = await process.terminate(grace: grace ?? config.destroyGrace)
        _ = await waitForEnd()
    }

    /// Raw QMP passthrough. Queries (query-*) never wait for the operation lock.
    /// `queriesOnly` (the read-only socket) refuses anything but query-*.
    public func qmpPassthrough(_ commandJSON: String, timeout: Duration?, queriesOnly: Bool = false) async throws
        -> (reply: String, isError: Bool)
    {
        let parsed: JSONValue
        do {
            parsed = try JSONValue.parse(commandJSON)
        } catch {
            throw ShimError(.invalidArgument, "the QMP command is not valid JSON: \(error)")
        }
        guard case .object(let command) = parsed else {
            throw ShimError(.invalidArgument, "a QMP command is a JSON object like {\"execute\":\"query-status\"}")
        }
        let name = command["execute"]?.stringValue ?? ""
        if queriesOnly, !name.hasPrefix("query-") {
            throw ShimError(
                .permissionDenied,
                "QMP '\(name)' is refused on the read-only control socket, which passes only query-* commands; use control.sock")
        }
        let client = try monitor()
        if name.hasPrefix("query-") {
            return try await client.executeRaw(command, timeout: timeout)
        }
        await operations.acquire()
        defer { Task { await self.operations.release() } }
        try requireAllowed(.qmp)
        return try await client.executeRaw(command, timeout: timeout)
    }
}
