import GRPCCore

typealias ControlAPI = Vmshim_Control_V1_Control

/// The gRPC harness in front of `VMSupervisor`: turns wire messages into
/// typed calls and back, and errors into statuses (through ShimError+RPC).
/// No VM logic lives here.
struct ControlService: Vmshim_Control_V1_Control.SimpleServiceProtocol {
    let supervisor: VMSupervisor
    /// The read-only socket: only calls that change nothing.
    var readOnly = false

    /// A state-changing call: refused on the read-only socket.
    private func runWritable<T: Sendable>(_ call: String, _ body: () async throws -> T) async throws -> T {
        guard !readOnly else {
            throw ShimError(
                .permissionDenied,
                "\(call) changes the VM and this is the read-only control socket (Info, GetState, WatchEvents and query-* QMP commands only); use control.sock"
            ).rpcError
        }
        return try await run(body)
    }

    private func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RPCError {
            throw error
        } catch {
            throw ShimError.wrap(error, .internalError, "control API").rpcError
        }
    }

    func info(request: Vmshim_Control_V1_InfoRequest, context: ServerContext) async throws -> Vmshim_Control_V1_InfoResponse {
        let status = await supervisor.status
        var response = Vmshim_Control_V1_InfoResponse()
        response.shimVersion = VMShimVersion.current
        response.apiVersions = VMShimVersion.controlAPIs
        response.qemuVersion = status.qemuVersion
        response.qemuBinary = status.qemuBinary
        response.statusFileVersion = Int32(StatusFile.schemaVersion)
        return response
    }

    func getState(request: Vmshim_Control_V1_GetStateRequest, context: ServerContext) async throws -> Vmshim_Control_V1_DomainState {
        ControlService.domainState(await supervisor.status, includeXML: request.includeXml)
    }

    func shutdown(request: Vmshim_Control_V1_ShutdownRequest, context: ServerContext) async throws -> Vmshim_Control_V1_OperationResponse {
        try await runWritable("Shutdown") {
            let timeout: Duration? = request.timeoutSeconds == 0 ? nil : .seconds(Int(request.timeoutSeconds))
            try await supervisor.shutdown(timeout: timeout, forceAfterTimeout: request.forceAfterTimeout, wait: !request.noWait)
            return await operationResponse()
        }
    }

    func reboot(request: Vmshim_Control_V1_RebootRequest, context: ServerContext) async throws -> Vmshim_Control_V1_OperationResponse {
        try await runWritable("Reboot") {
            switch request.mode {
            case .reset: try await supervisor.reboot(mode: .reset)
            default: try await supervisor.reboot(mode: .acpi)
            }
            return await operationResponse()
        }
    }

    func pause(request: Vmshim_Control_V1_PauseRequest, context: ServerContext) async throws -> Vmshim_Control_V1_OperationResponse {
        try await runWritable("Pause") {
            try await supervisor.pause()
            return await operationResponse()
        }
    }

    func resume(request: Vmshim_Control_V1_ResumeRequest, context: ServerContext) async throws -> Vmshim_Control_V1_OperationResponse {
        try await runWritable("Resume") {
            try await supervisor.resume()
            return await operationResponse()
        }
    }

    func destroy(request: Vmshim_Control_V1_DestroyRequest, context: ServerContext) async throws -> Vmshim_Control_V1_OperationResponse {
        try await runWritable("Destroy") {
            let grace: Duration? = request.graceSeconds == 0 ? nil : .seconds(Int(request.graceSeconds))
            try await supervisor.destroy(grace: grace)
            return await operationResponse()
        }
    }

    func qmp(request: Vmshim_Control_V1_QMPRequest, context: ServerContext) async throws -> Vmshim_Control_V1_QMPResponse {
        try await run {
            let timeout: Duration? = request.timeoutSeconds == 0 ? nil : .seconds(Int(request.timeoutSeconds))
            let (reply, isError) = try await supervisor.qmpPassthrough(request.commandJson, timeout: timeout, queriesOnly: readOnly)
            var response = Vmshim_Control_V1_QMPResponse()
            response.replyJson = reply
            response.isError = isError
            return response
        }
    }

    func save(request: Vmshim_Control_V1_SaveRequest, context: ServerContext) async throws -> Vmshim_Control_V1_SaveResponse {
        try await runWritable("Save") {
            let result = try await supervisor.save(
                bypassCache: request.bypassCache, bandwidthMiBPerSecond: request.bandwidthMibPerSecond)
            var response = Vmshim_Control_V1_SaveResponse()
            response.imagePath = result.imagePath
            response.streamBytes = result.streamBytes
            let (seconds, attoseconds) = result.duration.components
            response.durationMicros = UInt64(max(0, seconds)) * 1_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000_000)
            response.guestWasRunning = result.guestWasRunning
            return response
        }
    }

    func watchEvents(
        request: Vmshim_Control_V1_WatchEventsRequest, response: RPCWriter<Vmshim_Control_V1_Event>, context: ServerContext
    ) async throws {
        // The current state first, so a watcher never misses where the VM is.
        let (snapshot, events) = await supervisor.subscribeWithSnapshot()
        if let first = ControlService.wireEvent(snapshot, includeQMP: true) { try await response.write(first) }
        for await event in events {
            guard let message = ControlService.wireEvent(event, includeQMP: request.includeQmp) else { continue }
            try await response.write(message)
        }
    }

    static func wireEvent(_ event: VMEvent, includeQMP: Bool) -> Vmshim_Control_V1_Event? {
        var message = Vmshim_Control_V1_Event()
        message.sequence = event.sequence
        message.timestampUnixMicros = event.timestampMicros
        switch event.kind {
        case .lifecycle(let state, let reason):
            var lifecycle = Vmshim_Control_V1_LifecycleEvent()
            lifecycle.state = ControlService.wireState(state)
            lifecycle.reason = reason
            message.lifecycle = lifecycle
        case .qmp(let qmpEvent):
            guard includeQMP else { return nil }
            var wire = Vmshim_Control_V1_QMPEvent()
            wire.name = qmpEvent.name
            wire.dataJson = JSONValue.object(qmpEvent.data).description
            message.qmp = wire
        case .diskDropped(let targetDev, let alias, let source, let reason):
            var wire = Vmshim_Control_V1_DiskChangeEvent()
            wire.targetDev = targetDev
            wire.alias = alias
            wire.oldSource = source
            wire.reason = reason
            message.diskChange = wire
        }
        return message
    }

    private func operationResponse() async -> Vmshim_Control_V1_OperationResponse {
        var response = Vmshim_Control_V1_OperationResponse()
        response.state = ControlService.domainState(await supervisor.status, includeXML: false)
        return response
    }

    static func domainState(_ status: VMStatus, includeXML: Bool) -> Vmshim_Control_V1_DomainState {
        var message = Vmshim_Control_V1_DomainState()
        message.name = status.name
        message.uuid = status.uuid
        message.state = wireState(status.state)
        message.reason = status.reason
        message.shimPid = status.shimPID
        message.qemuPid = status.qemuPID
        message.qemuStartTime = status.qemuStartTime
        message.qmpSocket = status.qmpSocket
        message.controlSocket = status.controlSocket
        message.logFile = status.logFile
        message.startedAtUnix = status.startedAt
        message.vcpus = UInt32(status.vcpus)
        message.memoryKib = status.memoryKiB
        message.charDevices = status.charDevices.map { device in
            var path = Vmshim_Control_V1_CharDevicePath()
            path.alias = device.alias
            path.path = device.path
            return path
        }
        message.reattached = status.reattached
        if includeXML { message.liveXml = status.liveXML }
        return message
    }

    static func wireState(_ state: VMState) -> Vmshim_Control_V1_State {
        switch state {
        case .starting: return .starting
        case .running: return .running
        case .paused: return .paused
        case .shuttingDown: return .shuttingDown
        case .shutoff: return .shutoff
        case .crashed: return .crashed
        }
    }

    static func state(_ wire: Vmshim_Control_V1_State) -> VMState? {
        switch wire {
        case .starting: return .starting
        case .running: return .running
        case .paused: return .paused
        case .shuttingDown: return .shuttingDown
        case .shutoff: return .shutoff
        case .crashed: return .crashed
        default: return nil
        }
    }
}
