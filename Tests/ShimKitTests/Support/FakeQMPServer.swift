import Foundation
import Synchronization
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// A scripted QMP monitor on a real unix socket, for unit tests of the client.
///
/// It sends `greeting` on accept, then hands each received line to `respond`,
/// which returns the raw lines to write back (replies, events, garbage) or nil
/// to close the connection. Runs on its own thread: blocking I/O is fine there.
final class FakeQMPServer: Sendable {
    let path: String
    private let listener: Int32
    private let received = Mutex<[String]>([])
    private let connection = Mutex<Int32>(-1)

    static let defaultGreeting =
        #"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}"#

    init(
        greeting: String? = FakeQMPServer.defaultGreeting,
        respond: @escaping @Sendable (_ line: String, _ object: JSONValue?) -> [String]?
    ) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fakeqmp-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        path = dir + "/qmp.sock"
        listener = try UnixSocket.listen(path: path)
        let thread = Thread { [self] in serve(greeting: greeting, respond: respond) }
        thread.start()
    }

    /// Replies to qmp_capabilities, then defers to `respond`.
    static func negotiating(
        _ respond: @escaping @Sendable (_ line: String, _ object: JSONValue?) -> [String]?
    ) throws -> FakeQMPServer {
        try FakeQMPServer { line, object in
            if object?["execute"]?.stringValue == "qmp_capabilities" {
                return [reply(object, #"{}"#)]
            }
            return respond(line, object)
        }
    }

    /// `{"return": RESULT, "id": ID}` echoing the request's id.
    static func reply(_ request: JSONValue?, _ result: String) -> String {
        let id = request?["id"].map { $0.description } ?? "null"
        return #"{"return": \#(result), "id": \#(id)}"# + "\r\n"
    }

    static func error(_ request: JSONValue?, _ klass: String, _ description: String) -> String {
        let id = request?["id"].map { $0.description } ?? "null"
        return #"{"error": {"class": "\#(klass)", "desc": "\#(description)"}, "id": \#(id)}"# + "\r\n"
    }

    var receivedLines: [String] { received.withLock { $0 } }

    /// Writes raw text to the connected client (events pushed by the test).
    func push(_ text: String) {
        let fd = connection.withLock { $0 }
        guard fd >= 0 else { return }
        Self.writeAll(fd, text)
    }

    func stop() {
        let fd = connection.withLock { value -> Int32 in
            defer { value = -1 }
            return value
        }
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        shutdown(listener, Int32(SHUT_RDWR))
    }

    deinit {
        close(listener)
        unlink(path)
    }

    private static func writeAll(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            offset += n
        }
    }

    private func serve(greeting: String?, respond: @Sendable (String, JSONValue?) -> [String]?) {
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { return }
        connection.withLock { $0 = fd }
        defer {
            close(fd)
            connection.withLock { $0 = -1 }
        }
        if let greeting { Self.writeAll(fd, greeting + "\r\n") }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            pending += buffer[0..<n]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                received.withLock { $0.append(line) }
                guard let replies = respond(line, try? JSONValue.parse(line)) else {
                    shutdown(fd, Int32(SHUT_RDWR))
                    return
                }
                for reply in replies { Self.writeAll(fd, reply) }
            }
        }
    }
}
