import Foundation
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// The QMP client against a real QEMU, started the way the shim starts it: a
/// pre-bound monitor socket passed as fd 3.
@Suite struct QMPRealQEMU {
    struct Monitor {
        let process: ProcessHandle
        let path: String
    }

    func startQEMU(machine: String = "none") throws -> Monitor {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qmp-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/qmp.sock"
        let listener = try UnixSocket.listen(path: path)
        defer { close(listener) }
        let devNull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { close(devNull) }
        let spawned = try Spawner.spawn(
            SpawnSpec(
                executable: "/usr/bin/qemu-system-x86_64",
                arguments: [
                    "qemu-system-x86_64", "-S", "-display", "none", "-nodefaults", "-machine", machine, "-accel", "tcg",
                    "-chardev", "socket,id=mon,fd=3,server=on,wait=off", "-mon", "chardev=mon,mode=control",
                ],
                environment: ["LC_ALL=C"], outputFD: devNull, inheritedFDs: [(listener, 3)]))
        return Monitor(process: ProcessHandle(spawned), path: path)
    }

    @Test func negotiatesAndQueries() async throws {
        let qemu = try startQEMU()
        defer { _ = qemu.process.signal(SIGKILL) }
        let client = try await QMPClient.connect(path: qemu.path, timeout: .seconds(10))
        #expect(client.greeting.major >= 7)
        let status = try await client.run(QueryStatus())
        #expect(status.status == "prelaunch")
        let (reply, isError) = try await client.executeRaw(["execute": "no-such-command", "id": 5])
        #expect(isError)
        #expect(try JSONValue.parse(reply)["error"]?["class"]?.stringValue == "CommandNotFound")
        #expect(try JSONValue.parse(reply)["id"] == .int(5))
        await client.close()
    }

    /// quit: QEMU replies, sends SHUTDOWN (host-qmp-quit), closes the monitor
    /// and exits 0; the pidfd sees the exit.
    @Test func quitEndsQEMUAndTheMonitor() async throws {
        let qemu = try startQEMU(machine: "pc")
        defer { _ = qemu.process.signal(SIGKILL) }
        let client = try await QMPClient.connect(path: qemu.path, timeout: .seconds(10))
        try await client.run(Quit())
        var names: [String] = []
        for await event in client.events { names.append(event.name) }
        #expect(names.contains("SHUTDOWN"))
        #expect(client.isClosed)
        let exit = await qemu.process.waitForExit(timeout: .seconds(10))
        #expect(exit == .exited(0))
    }

    /// QEMU dying mid-command fails the pending call instead of hanging it.
    @Test func killedQEMUFailsPendingCalls() async throws {
        let qemu = try startQEMU()
        let client = try await QMPClient.connect(path: qemu.path, timeout: .seconds(10))
        qemu.process.signal(SIGKILL)
        _ = await qemu.process.waitForExit(timeout: .seconds(10))
        await client.waitUntilClosed()
        await #expect {
            try await client.run(QueryStatus())
        } throws: { error in
            (error as? ShimError)?.code == .unavailable
        }
    }
}
