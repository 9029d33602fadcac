/// The per-VM status file (`<run dir>/status.json`), format version 1.
///
/// Written atomically whenever the state changes. It is how `vmshim list`,
/// `vmshim status` and a restarted shim find a VM, and how a restarted shim
/// decides whether the QEMU it names is still the same process (pid, start
/// time and boot id). The format is documented in docs/status-file.md: new
/// fields are optional, readers ignore unknown fields, and a file with a
/// `schemaVersion` this vmshim does not know is refused rather than misread.
public struct StatusFile: Sendable, Equatable {
    public static let schemaVersion = 1
    public static let fileName = "status.json"

    public var name: String
    public var uuid: String
    public var state: VMState
    /// Why the VM is in that state: booted, user, unpaused, shutdown, panicked, crashed, …
    public var reason: String
    public var shim: ProcessIdentity
    public var shimVersion: String
    public var qemu: ProcessIdentity?
    public var qemuBinary: String
    public var qemuVersion: String?
    public var qmpSocket: String
    public var controlSocket: String
    public var logFile: String
    /// Unix seconds.
    public var startedAt: Int64
    public var updatedAt: Int64
    /// The live definition: the user's XML plus what vmshim filled in.
    public var liveXML: String
    /// Set while a managed save runs, so a shim that replaces a dead one can
    /// undo it (remove the partial image, resume the guest).
    public var pendingSave: PendingSave?
    /// QEMU's dedicated cgroup, one directory per hierarchy (empty with
    /// register='none'); a reattaching shim removes it when QEMU ends.
    public var cgroupDirectories: [String]

    public struct PendingSave: Sendable, Equatable {
        /// The image being written (`NAME.save.part`).
        public var partialImage: String
        /// The image a finished save renames it to.
        public var image: String
        public var guestWasRunning: Bool

        public init(partialImage: String, image: String, guestWasRunning: Bool) {
            self.partialImage = partialImage
            self.image = image
            self.guestWasRunning = guestWasRunning
        }
    }

    public init(
        name: String, uuid: String, state: VMState, reason: String, shim: ProcessIdentity, shimVersion: String,
        qemu: ProcessIdentity?, qemuBinary: String, qemuVersion: String?, qmpSocket: String, controlSocket: String,
        logFile: String, startedAt: Int64, updatedAt: Int64, liveXML: String, pendingSave: PendingSave? = nil,
        cgroupDirectories: [String] = []
    ) {
        self.name = name
        self.uuid = uuid
        self.state = state
        self.reason = reason
        self.shim = shim
        self.shimVersion = shimVersion
        self.qemu = qemu
        self.qemuBinary = qemuBinary
        self.qemuVersion = qemuVersion
        self.qmpSocket = qmpSocket
        self.controlSocket = controlSocket
        self.logFile = logFile
        self.startedAt = startedAt
        self.updatedAt = updatedAt
        self.liveXML = liveXML
        self.pendingSave = pendingSave
        self.cgroupDirectories = cgroupDirectories
    }

    static func identityJSON(_ identity: ProcessIdentity) -> JSONValue {
        ["pid": .int(Int64(identity.pid)), "startTime": .number(identity.startTime), "bootID": .string(identity.bootID)]
    }

    public var json: JSONValue {
        var object: JSONObject = [
            "schemaVersion": .int(Int64(StatusFile.schemaVersion)),
            "name": .string(name),
            "uuid": .string(uuid),
            "state": .string(state.rawValue),
            "reason": .string(reason),
            "shim": StatusFile.identityJSON(shim),
            "shimVersion": .string(shimVersion),
        ]
        if let qemu { object["qemu"] = StatusFile.identityJSON(qemu) }
        object["qemuBinary"] = .string(qemuBinary)
        if let qemuVersion { object["qemuVersion"] = .string(qemuVersion) }
        object["qmpSocket"] = .string(qmpSocket)
        object["controlSocket"] = .string(controlSocket)
        object["logFile"] = .string(logFile)
        object["startedAt"] = .int(startedAt)
        object["updatedAt"] = .int(updatedAt)
        object["liveXML"] = .string(liveXML)
        if !cgroupDirectories.isEmpty { object["cgroups"] = .array(cgroupDirectories.map { .string($0) }) }
        if let pendingSave {
            object["save"] = [
                "partialImage": .string(pendingSave.partialImage), "image": .string(pendingSave.image),
                "guestWasRunning": .bool(pendingSave.guestWasRunning),
            ]
        }
        return .object(object)
    }

    public func write(to path: String) throws {
        // Not durable: the file describes running processes, which a host
        // crash ends too, so fsync would only put disk latency on every state
        // change (start included). rename keeps it whole if the shim dies.
        try FileIO.writeAtomically(path, Array((json.description + "\n").utf8), mode: 0o600, durable: false)
    }

    public static func read(from path: String) throws -> StatusFile {
        let text = try FileIO.readString(path)
        return try decode(text, path: path)
    }

    public static func decode(_ text: String, path: String) throws -> StatusFile {
        let value: JSONValue
        do {
            value = try JSONValue.parse(text)
        } catch {
            throw ShimError(.invalidArgument, "\(path) is not valid JSON (\(error)); remove it if no VM is running", cause: error)
        }
        func field<T>(_ name: String, _ extract: (JSONValue) -> T?) throws -> T {
            guard let raw = value[name], let result = extract(raw) else {
                throw ShimError(.invalidArgument, "\(path): field '\(name)' is missing or has the wrong type")
            }
            return result
        }
        func identity(_ raw: JSONValue) -> ProcessIdentity? {
            guard let pid = raw["pid"]?.int64Value, let start = raw["startTime"]?.uint64Value,
                let boot = raw["bootID"]?.stringValue, let pid32 = Int32(exactly: pid)
            else { return nil }
            return ProcessIdentity(pid: pid32, startTime: start, bootID: boot)
        }
        let version = try field("schemaVersion", \.int64Value)
        guard version >= 1 else {
            throw ShimError(.invalidArgument, "\(path): schemaVersion \(version) is not a valid status format version")
        }
        guard version <= Int64(schemaVersion) else {
            throw ShimError(
                .unsupported,
                "\(path) has status format version \(version); this vmshim reads up to \(schemaVersion): use a newer vmshim")
        }
        let stateName = try field("state", \.stringValue)
        guard let state = VMState(rawValue: stateName) else {
            throw ShimError(.invalidArgument, "\(path): unknown state '\(stateName)'")
        }
        return StatusFile(
            name: try field("name", \.stringValue),
            uuid: try field("uuid", \.stringValue),
            state: state,
            reason: value["reason"]?.stringValue ?? "",
            shim: try field("shim", identity),
            shimVersion: value["shimVersion"]?.stringValue ?? "",
            qemu: value["qemu"].flatMap(identity),
            qemuBinary: value["qemuBinary"]?.stringValue ?? "",
            qemuVersion: value["qemuVersion"]?.stringValue,
            qmpSocket: try field("qmpSocket", \.stringValue),
            controlSocket: try field("controlSocket", \.stringValue),
            logFile: value["logFile"]?.stringValue ?? "",
            startedAt: value["startedAt"]?.int64Value ?? 0,
            updatedAt: value["updatedAt"]?.int64Value ?? 0,
            liveXML: value["liveXML"]?.stringValue ?? "",
            pendingSave: value["save"].flatMap { save in
                guard let partial = save["partialImage"]?.stringValue, let image = save["image"]?.stringValue else { return nil }
                return PendingSave(partialImage: partial, image: image, guestWasRunning: save["guestWasRunning"]?.boolValue ?? false)
            },
            cgroupDirectories: (value["cgroups"]?.arrayValue ?? []).compactMap(\.stringValue))
    }
}
