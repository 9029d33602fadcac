import Foundation
import Testing
@testable import ShimKit

@Suite struct StatusFileFormat {
    func sample() -> StatusFile {
        StatusFile(
            name: "tiny", uuid: "5a1c0b2e-6f3d-4c1a-9e7b-8d2f4a6c0e11", state: .running, reason: "booted",
            shim: ProcessIdentity(pid: 100, startTime: 5, bootID: "b"), shimVersion: "0.1.0",
            qemu: ProcessIdentity(pid: 101, startTime: 6, bootID: "b"), qemuBinary: "/usr/bin/qemu-system-x86_64",
            qemuVersion: "7.2.22", qmpSocket: "/run/vmshim/tiny/qmp.sock", controlSocket: "/run/vmshim/tiny/control.sock",
            logFile: "/var/log/vmshim/tiny.log", startedAt: 1_790_000_000, updatedAt: 1_790_000_001,
            liveXML: "<domain type='qemu'>\n  <name>tiny</name>\n</domain>\n")
    }

    func temporaryPath() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("status-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir + "/status.json"
    }

    @Test func roundTrips() throws {
        let path = try temporaryPath()
        try sample().write(to: path)
        #expect(try StatusFile.read(from: path) == sample())
        let raw = try JSONValue.parse(try Fixtures.read(path))
        #expect(raw["schemaVersion"] == .int(1))
        #expect(raw["qemu"]?["pid"] == .int(101))
    }

    /// The write goes through a temporary file and rename: no reader ever sees
    /// a half-written file, and no temporary is left behind.
    @Test func writesAtomically() async throws {
        let path = try temporaryPath()
        let directory = FileIO.parentDirectory(of: path)
        let writer = Task.detached {
            for index in 0..<200 {
                var status = self.sample()
                status.reason = String(repeating: "r", count: index * 50)
                try status.write(to: path)
            }
        }
        var reads = 0
        while reads < 200 {
            if FileIO.exists(path) {
                _ = try StatusFile.read(from: path)  // throws on a torn file
                reads += 1
            }
        }
        try await writer.value
        #expect(FileIO.listDirectory(directory) == ["status.json"])
    }

    @Test func refusesANewerFormat() throws {
        var raw = sample().json
        if case .object(var object) = raw {
            object["schemaVersion"] = .int(2)
            raw = .object(object)
        }
        #expect {
            try StatusFile.decode(raw.description, path: "/run/vmshim/x/status.json")
        } throws: { error in
            (error as? ShimError)?.code == .unsupported && "\(error)".contains("newer vmshim")
        }
    }

    @Test func ignoresUnknownFields() throws {
        var raw = sample().json
        if case .object(var object) = raw {
            object["futureField"] = .string("x")
            raw = .object(object)
        }
        #expect(try StatusFile.decode(raw.description, path: "p") == sample())
    }

    @Test func namesTheFieldThatIsWrong() {
        #expect {
            try StatusFile.decode(#"{"schemaVersion":1,"name":"x","uuid":"u","state":"running"}"#, path: "/p/status.json")
        } throws: { error in
            "\(error)".contains("/p/status.json") && "\(error)".contains("shim")
        }
    }
}
