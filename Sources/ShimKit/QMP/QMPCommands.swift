/// A typed QMP command: its wire name, arguments, and how to read its reply.
public protocol QMPCommand: Sendable {
    associatedtype Response: Sendable
    static var name: String { get }
    var arguments: JSONObject? { get }
    static func decode(_ result: JSONValue) throws -> Response
}

extension QMPCommand {
    public var arguments: JSONObject? { nil }
}

extension QMPCommand where Response == Void {
    public static func decode(_ result: JSONValue) throws {}
}

enum QMPDecode {
    static func failure(_ command: String, _ result: JSONValue) -> ShimError {
        ShimError(.internalError, "QMP command '\(command)' returned an unexpected value: \(result.description.prefix(300))")
    }
}

// MARK: - Run state

/// Maps to QMP `query-status`.
public struct QueryStatus: QMPCommand {
    public static let name = "query-status"
    public struct Response: Sendable, Equatable {
        /// QEMU's RunState: running, paused, prelaunch, shutdown, guest-panicked, inmigrate, …
        public var status: String
        public var running: Bool
    }
    public init() {}
    public static func decode(_ result: JSONValue) throws -> Response {
        guard let status = result["status"]?.stringValue, let running = result["running"]?.boolValue else {
            throw QMPDecode.failure(name, result)
        }
        return Response(status: status, running: running)
    }
}

/// Maps to QMP `cont`: start or resume the vCPUs.
public struct Cont: QMPCommand {
    public static let name = "cont"
    public typealias Response = Void
    public init() {}
}

/// Maps to QMP `stop`: pause the vCPUs.
public struct Stop: QMPCommand {
    public static let name = "stop"
    public typealias Response = Void
    public init() {}
}

/// Maps to QMP `system_powerdown`: press the ACPI power button.
public struct SystemPowerdown: QMPCommand {
    public static let name = "system_powerdown"
    public typealias Response = Void
    public init() {}
}

/// Maps to QMP `system_reset`: hardware reset.
public struct SystemReset: QMPCommand {
    public static let name = "system_reset"
    public typealias Response = Void
    public init() {}
}

/// Maps to QMP `quit`: QEMU exits (after a SHUTDOWN event with reason host-qmp-quit).
public struct Quit: QMPCommand {
    public static let name = "quit"
    public typealias Response = Void
    public init() {}
}

/// Maps to QMP `set-action`: what QEMU does on reboot, shutdown, panic, watchdog.
public struct SetAction: QMPCommand {
    public static let name = "set-action"
    public typealias Response = Void
    public var reboot: String?
    public var shutdown: String?
    public var panic: String?
    public init(reboot: String? = nil, shutdown: String? = nil, panic: String? = nil) {
        self.reboot = reboot
        self.shutdown = shutdown
        self.panic = panic
    }
    public var arguments: JSONObject? {
        var object = JSONObject()
        if let reboot { object["reboot"] = .string(reboot) }
        if let shutdown { object["shutdown"] = .string(shutdown) }
        if let panic { object["panic"] = .string(panic) }
        return object
    }
}

// MARK: - Devices and memory

/// Maps to QMP `query-chardev`: label → filename ("pty:/dev/pts/3", "unix:…").
public struct QueryChardev: QMPCommand {
    public static let name = "query-chardev"
    public struct Chardev: Sendable, Equatable {
        public var label: String
        public var filename: String
    }
    public init() {}
    public static func decode(_ result: JSONValue) throws -> [Chardev] {
        guard let items = result.arrayValue else { throw QMPDecode.failure(name, result) }
        return items.compactMap { item in
            guard let label = item["label"]?.stringValue, let filename = item["filename"]?.stringValue else { return nil }
            return Chardev(label: label, filename: filename)
        }
    }
}

/// Maps to QMP `balloon`: set the guest's memory target in bytes.
public struct Balloon: QMPCommand {
    public static let name = "balloon"
    public typealias Response = Void
    public var bytes: UInt64
    public init(bytes: UInt64) { self.bytes = bytes }
    public var arguments: JSONObject? { ["value": .number(bytes)] }
}

/// Maps to QMP `query-balloon`: the balloon's current size in bytes.
public struct QueryBalloon: QMPCommand {
    public static let name = "query-balloon"
    public init() {}
    public static func decode(_ result: JSONValue) throws -> UInt64 {
        guard let actual = result["actual"]?.uint64Value else { throw QMPDecode.failure(name, result) }
        return actual
    }
}

/// Maps to QMP `qom-set`.
public struct QOMSet: QMPCommand {
    public static let name = "qom-set"
    public typealias Response = Void
    public var path: String
    public var property: String
    public var value: JSONValue
    public init(path: String, property: String, value: JSONValue) {
        self.path = path
        self.property = property
        self.value = value
    }
    public var arguments: JSONObject? { ["path": .string(path), "property": .string(property), "value": value] }
}

/// Maps to QMP `query-cpus-fast`: one entry per online vCPU with its host thread id.
public struct QueryCPUsFast: QMPCommand {
    public static let name = "query-cpus-fast"
    public struct CPU: Sendable, Equatable {
        public var index: Int
        public var threadID: Int
    }
    public init() {}
    public static func decode(_ result: JSONValue) throws -> [CPU] {
        guard let items = result.arrayValue else { throw QMPDecode.failure(name, result) }
        return items.compactMap { item in
            guard let index = item["cpu-index"]?.int64Value, let thread = item["thread-id"]?.int64Value else { return nil }
            return CPU(index: Int(index), threadID: Int(thread))
        }
    }
}

/// Maps to QMP `query-iothreads`: each iothread object with its host thread id.
public struct QueryIOThreads: QMPCommand {
    public static let name = "query-iothreads"
    public struct IOThread: Sendable, Equatable {
        public var id: String
        public var threadID: Int
    }
    public init() {}
    public static func decode(_ result: JSONValue) throws -> [IOThread] {
        guard let items = result.arrayValue else { throw QMPDecode.failure(name, result) }
        return items.compactMap { item in
            guard let id = item["id"]?.stringValue, let thread = item["thread-id"]?.int64Value else { return nil }
            return IOThread(id: id, threadID: Int(thread))
        }
    }
}

/// Maps to QMP `block_set_io_throttle`: a disk's `<iotune>`. The six basic
/// limits are required by QEMU (0 = none); the others only when set.
public struct BlockSetIOThrottle: QMPCommand {
    public static let name = "block_set_io_throttle"
    public typealias Response = Void
    /// The guest device's qdev id or QOM path.
    public var device: String
    public var limits: [String: Int64]
    public var group: String?
    public init(device: String, limits: [String: Int64], group: String?) {
        self.device = device
        self.limits = limits
        self.group = group
    }
    public var arguments: JSONObject? {
        var object: JSONObject = ["id": .string(device)]
        for required in ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"] {
            object[required] = .number(limits[required] ?? 0)
        }
        for (name, value) in limits.sorted(by: { $0.key < $1.key }) where object[name] == nil {
            object[name] = .number(value)
        }
        if let group { object["group"] = .string(group) }
        return object
    }
}
