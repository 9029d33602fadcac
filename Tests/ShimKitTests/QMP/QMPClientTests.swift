import Foundation
import Synchronization
import Testing
@testable import ShimKit

@Suite struct QMPClientAgainstFakeMonitor {
    @Test func negotiatesCapabilitiesFirst() async throws {
        let server = try FakeQMPServer.negotiating { _, request in
            [FakeQMPServer.reply(request, #"{"status": "prelaunch", "singlestep": false, "running": false}"#)]
        }
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        #expect(client.greeting.major == 7)
        #expect(client.greeting.versionString == "7.2.22")
        let status = try await client.run(QueryStatus())
        #expect(status.status == "prelaunch")
        #expect(status.running == false)
        let sent = server.receivedLines.compactMap { try? JSONValue.parse($0) }
        #expect(sent.first?["execute"]?.stringValue == "qmp_capabilities")
        #expect(sent.count == 2)
        // Every command carries a unique id.
        let ids = sent.compactMap { $0["id"]?.stringValue }
        #expect(Set(ids).count == 2)
        await client.close()
    }

    /// Replies are routed by id, not by order.
    @Test func routesOutOfOrderReplies() async throws {
        let held = Mutex<JSONValue?>(nil)
        let server = try FakeQMPServer.negotiating { _, request in
            switch request?["execute"]?.stringValue {
            case "slow":
                held.withLock { $0 = request }
                return []
            case "fast":
                let slow = held.withLock { $0 }
                return [FakeQMPServer.reply(request, #""fast-result""#), FakeQMPServer.reply(slow, #""slow-result""#)]
            default:
                return [FakeQMPServer.error(request, "CommandNotFound", "no")]
            }
        }
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        async let slow = client.execute("slow")
        try await Task.sleep(for: .milliseconds(100))
        async let fast = client.execute("fast")
        #expect(try await fast.stringValue == "fast-result")
        #expect(try await slow.stringValue == "slow-result")
        await client.close()
    }

    @Test func qmpErrorsBecomeShimErrors() async throws {
        let server = try FakeQMPServer.negotiating { _, request in
            [FakeQMPServer.error(request, "GenericError", "Device 'nope' not found")]
        }
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        await #expect {
            try await client.execute("device_del", ["id": "nope"])
        } throws: { error in
            guard let error = error as? ShimError else { return false }
            return error.code == .qmpCommandFailed && error.message.contains("device_del")
                && error.message.contains("Device 'nope' not found")
        }
        await client.close()
    }

    @Test func everyCommandTimesOut() async throws {
        let server = try FakeQMPServer.negotiating { _, _ in [] }  // never answers
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        let started = ContinuousClock.now
        await #expect {
            try await client.execute("query-status", timeout: .milliseconds(200))
        } throws: { error in
            (error as? ShimError)?.code == .timeout && "\(error)".contains("query-status")
        }
        #expect(ContinuousClock.now - started < .seconds(3))
        // A late reply for the timed-out command is dropped; the client still works.
        #expect(!client.isClosed)
        await client.close()
    }

    @Test func closingTheMonitorFailsEveryPendingCall() async throws {
        let count = Mutex(0)
        let server = try FakeQMPServer.negotiating { _, _ in
            let n = count.withLock { value -> Int in
                value += 1
                return value
            }
            return n < 3 ? [] : nil  // hold two commands, then hang up on the third
        }
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        let first = Task { try await client.execute("a") }
        let second = Task { try await client.execute("b") }
        try await Task.sleep(for: .milliseconds(100))
        let third = Task { try await client.execute("c") }
        for result in [await first.result, await second.result, await third.result] {
            guard case .failure(let error) = result else {
                Issue.record("a pending command succeeded after the monitor closed")
                continue
            }
            #expect((error as? ShimError)?.code == .unavailable)
        }
        await client.waitUntilClosed()
        #expect(client.isClosed)
        await #expect(throws: ShimError.self) { try await client.execute("d") }
    }

    @Test func typedAndUnknownEventsArriveInOrder() async throws {
        let server = try FakeQMPServer.negotiating { _, request in [FakeQMPServer.reply(request, "{}")] }
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        let ts = #""timestamp": {"seconds": 1700000000, "microseconds": 42}"#
        server.push(
            """
            {"event": "POWERDOWN", \(ts)}\r
            {"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, \(ts)}\r
            {"event": "BLOCK_IO_ERROR", "data": {"device": "", "node-name": "libvirt-1-format", "operation": "write", "action": "stop", "nospace": true, "reason": "No space left on device"}, \(ts)}\r
            {"event": "DEVICE_DELETED", "data": {"device": "net1", "path": "/machine/peripheral/net1"}, \(ts)}\r
            {"event": "GUEST_PANICKED", "data": {"action": "pause"}, \(ts)}\r
            {"event": "VSERPORT_CHANGE", "data": {"id": "channel0", "open": true}, \(ts)}\r

            """)
        var received: [QMPEvent] = []
        for await event in client.events {
            received.append(event)
            if received.count == 6 { break }
        }
        #expect(received.map(\.name) == ["POWERDOWN", "SHUTDOWN", "BLOCK_IO_ERROR", "DEVICE_DELETED", "GUEST_PANICKED", "VSERPORT_CHANGE"])
        #expect(received[0].kind == .powerdown)
        #expect(received[1].kind == .shutdown(guest: true, reason: "guest-shutdown"))
        #expect(received[2].kind == .blockIOError(device: "", nodeName: "libvirt-1-format", operation: "write", action: "stop", reason: "No space left on device"))
        #expect(received[3].kind == .deviceDeleted(device: "net1", path: "/machine/peripheral/net1"))
        #expect(received[4].kind == .guestPanicked(action: "pause"))
        #expect(received[5].kind == .other)
        #expect(received[5].data["id"]?.stringValue == "channel0")
        #expect(received[0].timestamp.seconds == 1_700_000_000 && received[0].timestamp.microseconds == 42)
        await client.close()
    }

    /// Passthrough gives the caller QEMU's reply with the caller's own id.
    @Test func passthroughRestoresTheCallersID() async throws {
        let server = try FakeQMPServer.negotiating { _, request in
            [FakeQMPServer.reply(request, #"{"status": "running", "singlestep": false, "running": true}"#)]
        }
        defer { server.stop() }
        let client = try await QMPClient.connect(path: server.path, timeout: .seconds(5))
        let (reply, isError) = try await client.executeRaw(["execute": "query-status", "id": "mine-7"])
        #expect(!isError)
        #expect(reply == #"{"return":{"status":"running","singlestep":false,"running":true},"id":"mine-7"}"#)
        let (noID, _) = try await client.executeRaw(["execute": "query-status"])
        #expect(try JSONValue.parse(noID)["id"] == nil)
        await #expect(throws: ShimError.self) { try await client.executeRaw(["execute": "qmp_capabilities"]) }
        await #expect(throws: ShimError.self) { try await client.executeRaw(["exec-oob": "x"]) }
        await client.close()
    }

    @Test func aMonitorThatNeverGreetsIsCutOff() async throws {
        let server = try FakeQMPServer(greeting: nil) { _, _ in [] }
        defer { server.stop() }
        await #expect {
            _ = try await QMPClient.connect(path: server.path, timeout: .milliseconds(300))
        } throws: { error in
            (error as? ShimError)?.code == .unavailable && "\(error)".contains("greeting")
        }
    }

    @Test func aPeerThatIsNotQMPIsRefused() async throws {
        let server = try FakeQMPServer(greeting: #"{"hello": "world"}"#) { _, _ in [] }
        defer { server.stop() }
        await #expect(throws: ShimError.self) {
            _ = try await QMPClient.connect(path: server.path, timeout: .seconds(2))
        }
    }

    @Test func connectingToNothingFailsClearly() async {
        await #expect {
            _ = try await QMPClient.connect(path: "/nonexistent/qmp.sock", timeout: .seconds(1))
        } throws: { error in
            (error as? ShimError)?.code == .unavailable && "\(error)".contains("/nonexistent/qmp.sock")
        }
    }
}

@Suite struct QMPLineDecoding {
    @Test func decodesMessages() throws {
        let greeting = try QMPMessage.decode(line: FakeQMPServer.defaultGreeting)
        guard case .greeting(let parsed) = greeting else { Issue.record("not a greeting"); return }
        #expect(parsed.major == 7 && parsed.minor == 2 && parsed.micro == 22)
        guard case .success(let id, let result, _) = try QMPMessage.decode(line: #"{"return": {}, "id": "vmshim-3"}"#) else {
            Issue.record("not a success")
            return
        }
        #expect(id == "vmshim-3")
        #expect(result == .object([:]))
        guard case .failure(_, let error, _) = try QMPMessage.decode(line: #"{"error": {"class": "GenericError", "desc": "boom"}}"#) else {
            Issue.record("not a failure")
            return
        }
        #expect(error.description.contains("boom"))
        #expect(throws: (any Error).self) { try QMPMessage.decode(line: "not json") }
    }
}
