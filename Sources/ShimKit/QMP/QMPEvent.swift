/// An asynchronous QMP event. `kind` is the typed view for the events vmshim
/// acts on; every event, known or not, keeps its name and data so it can be
/// forwarded unchanged (WatchEvents, the registrar).
public struct QMPEvent: Sendable, Equatable {
    public struct Timestamp: Sendable, Equatable {
        public var seconds: Int64
        public var microseconds: Int64

        init(seconds: Int64, microseconds: Int64) {
            self.seconds = seconds
            self.microseconds = microseconds
        }

        init(_ value: JSONValue?) {
            seconds = value?["seconds"]?.int64Value ?? 0
            microseconds = value?["microseconds"]?.int64Value ?? 0
        }
    }

    public var name: String
    public var data: JSONObject
    public var timestamp: Timestamp

    public init(name: String, data: JSONObject, timestamp: Timestamp) {
        self.name = name
        self.data = data
        self.timestamp = timestamp
    }

    public enum Kind: Sendable, Equatable {
        /// `guest`: the guest asked for it (poweroff, or reboot turned into shutdown);
        /// `reason`: QEMU's ShutdownCause, e.g. guest-shutdown, host-qmp-quit, host-signal.
        case shutdown(guest: Bool, reason: String)
        case powerdown
        case reset(guest: Bool, reason: String)
        case stop
        case resume
        case suspend
        case wakeup
        case guestPanicked(action: String)
        case blockIOError(device: String, nodeName: String?, operation: String, action: String, reason: String?)
        case deviceDeleted(device: String?, path: String)
        case balloonChange(actualBytes: UInt64)
        case rtcChange(offsetSeconds: Int64)
        case watchdog(action: String)
        case other
    }

    public var kind: Kind {
        switch name {
        case "SHUTDOWN":
            return .shutdown(guest: data["guest"]?.boolValue ?? false, reason: data["reason"]?.stringValue ?? "")
        case "POWERDOWN": return .powerdown
        case "RESET":
            return .reset(guest: data["guest"]?.boolValue ?? false, reason: data["reason"]?.stringValue ?? "")
        case "STOP": return .stop
        case "RESUME": return .resume
        case "SUSPEND": return .suspend
        case "WAKEUP": return .wakeup
        case "GUEST_PANICKED": return .guestPanicked(action: data["action"]?.stringValue ?? "")
        case "BLOCK_IO_ERROR":
            return .blockIOError(
                device: data["device"]?.stringValue ?? "", nodeName: data["node-name"]?.stringValue,
                operation: data["operation"]?.stringValue ?? "", action: data["action"]?.stringValue ?? "",
                reason: data["reason"]?.stringValue)
        case "DEVICE_DELETED":
            return .deviceDeleted(device: data["device"]?.stringValue, path: data["path"]?.stringValue ?? "")
        case "BALLOON_CHANGE": return .balloonChange(actualBytes: data["actual"]?.uint64Value ?? 0)
        case "RTC_CHANGE": return .rtcChange(offsetSeconds: data["offset"]?.int64Value ?? 0)
        case "WATCHDOG": return .watchdog(action: data["action"]?.stringValue ?? "")
        default: return .other
        }
    }

    /// The event as QEMU sent it (minus formatting), for passthrough consumers.
    public var json: JSONValue {
        var object: JSONObject = ["event": .string(name)]
        if !data.isEmpty { object["data"] = .object(data) }
        object["timestamp"] = ["seconds": .int(timestamp.seconds), "microseconds": .int(timestamp.microseconds)]
        return .object(object)
    }
}
