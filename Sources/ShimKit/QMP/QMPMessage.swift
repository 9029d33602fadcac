/// One line received from QEMU's monitor, classified the way libvirt's
/// qemuMonitorJSONIOProcessLine does: greeting, event, success or failure.
public enum QMPMessage: Sendable, Equatable {
    case greeting(QMPGreeting)
    case success(id: String?, result: JSONValue, raw: String)
    case failure(id: String?, QMPErrorReply, raw: String)
    case event(QMPEvent)

    public static func decode(line: String) throws -> QMPMessage {
        let value: JSONValue
        do {
            value = try JSONValue.parse(line)
        } catch {
            throw ShimError(.unavailable, "QMP: QEMU sent a line that is not JSON: \(line.prefix(200))", cause: error)
        }
        guard case .object(let object) = value else {
            throw ShimError(.unavailable, "QMP: QEMU sent a JSON value that is not an object: \(line.prefix(200))")
        }
        let id = object["id"].map(QMPMessage.idString)
        if let greeting = object["QMP"] {
            return .greeting(QMPGreeting(greeting))
        }
        if let result = object["return"] {
            return .success(id: id, result: result, raw: line)
        }
        if let error = object["error"] {
            return .failure(
                id: id,
                QMPErrorReply(
                    errorClass: error["class"]?.stringValue ?? "GenericError",
                    description: error["desc"]?.stringValue ?? "(no description)"),
                raw: line)
        }
        if let name = object["event"]?.stringValue {
            return .event(QMPEvent(name: name, data: object["data"]?.objectValue ?? JSONObject(), timestamp: QMPEvent.Timestamp(object["timestamp"])))
        }
        throw ShimError(.unavailable, "QMP: QEMU sent a message of unknown shape: \(line.prefix(200))")
    }

    /// Ids are echoed back verbatim by QEMU; vmshim only sends strings, but a
    /// passthrough caller may have used a number.
    static func idString(_ value: JSONValue) -> String {
        if case .string(let s) = value { return s }
        return value.description
    }
}

public struct QMPGreeting: Sendable, Equatable {
    public var major: Int
    public var minor: Int
    public var micro: Int
    public var package: String
    public var capabilities: [String]

    init(_ value: JSONValue) {
        let version = value["version"]
        let qemu = version?["qemu"]
        major = Int(qemu?["major"]?.int64Value ?? 0)
        minor = Int(qemu?["minor"]?.int64Value ?? 0)
        micro = Int(qemu?["micro"]?.int64Value ?? 0)
        package = version?["package"]?.stringValue ?? ""
        capabilities = value["capabilities"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }

    public var versionString: String { "\(major).\(minor).\(micro)" }
}

/// QEMU's `{"error": {"class": …, "desc": …}}`.
public struct QMPErrorReply: Sendable, Equatable, Error, CustomStringConvertible {
    public var errorClass: String
    public var description: String
}
