import Foundation
import Testing
@testable import ShimKit

/// The vmshim binary's argument handling: `vmshim guest.xml` and
/// `vmshim run …` take a fast path that must behave like the full parser.
@Suite struct CLIArguments {
    func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ShimHarness.binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func refusedXML() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString.prefix(6)).xml").path
        try domainXML(devices: "    <smartcard mode='host'/>").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func shorthandAndRunReachTheSameCheck() throws {
        let xml = try refusedXML()
        defer { FileIO.remove(xml) }
        for arguments in [[xml], ["run", xml], ["run", "--paused", "--run-root", "/tmp/vmshim-cli-test", xml], ["--run-root=/tmp/vmshim-cli-test", xml]] {
            let result = try run(arguments)
            #expect(result.status == 1, "\(arguments)")
            #expect(result.output.contains("<smartcard>") && result.output.contains(":10:"), "\(arguments): \(result.output)")
        }
    }

    @Test func badOptionsGetTheFullParsersMessages() throws {
        let unknown = try run(["run", "--bogus", "x.xml"])
        #expect(unknown.status == 64)
        #expect(unknown.output.contains("Unknown option '--bogus'"))
        let negative = try run(["run", "--shutdown-timeout=-1", "x.xml"])
        #expect(negative.status == 64)
        #expect(negative.output.contains("timeouts must be positive"))
        let level = try run(["run", "--log-level", "loud", "x.xml"])
        #expect(level.status == 64 && level.output.contains("unknown log level"))
        let two = try run(["run", "a.xml", "b.xml"])
        #expect(two.status == 64)
    }

    @Test func helpAndSubcommandsAreNotTakenForXML() throws {
        #expect(try run(["--help"]).output.contains("SUBCOMMANDS"))
        #expect(try run(["help", "run"]).output.contains("guest.xml"))
        #expect(try run(["run", "--help"]).output.contains("--shutdown-timeout"))
        let list = try run(["list", "--run-root", "/tmp/vmshim-cli-empty-\(UUID().uuidString.prefix(4))"])
        #expect(list.status == 0 && list.output.contains("NAME"))
    }

    /// validate: libvirt's RelaxNG schema (from Debian's libvirt0), then vmshim's own rules.
    @Test func validateUsesLibvirtsSchemaThenOurs() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/tiny.xml").path
        let good = try run(["validate", example])
        #expect(good.status == 0, "\(good.output)")
        #expect(good.output.contains("matches libvirt's schema") && good.output.contains("vmshim can run domain 'tiny'"))

        let invalid = FileManager.default.temporaryDirectory.appendingPathComponent("v-\(UUID().uuidString.prefix(6)).xml").path
        try domainXML(type: "nonsense").write(toFile: invalid, atomically: true, encoding: .utf8)
        defer { FileIO.remove(invalid) }
        let schemaError = try run(["validate", invalid])
        #expect(schemaError.status == 1)
        #expect(schemaError.output.contains("\(invalid):1:") && schemaError.output.contains("does not match libvirt's schema"))

        let refused = try refusedXML()
        defer { FileIO.remove(refused) }
        let ours = try run(["validate", refused])
        #expect(ours.status == 1)
        #expect(ours.output.contains("matches libvirt's schema") && ours.output.contains("<smartcard>"))

        // vmshim's <resource register='none'/> is not in libvirt's schema but is accepted.
        let unregistered = FileManager.default.temporaryDirectory.appendingPathComponent("r-\(UUID().uuidString.prefix(6)).xml").path
        try domainXML(extra: "  <resource register='none'/>").write(toFile: unregistered, atomically: true, encoding: .utf8)
        defer { FileIO.remove(unregistered) }
        let extension_ = try run(["validate", unregistered])
        #expect(extension_.status == 0, "\(extension_.output)")
        #expect(extension_.output.contains("matches libvirt's schema"))
        let misspelt = FileManager.default.temporaryDirectory.appendingPathComponent("r-\(UUID().uuidString.prefix(6)).xml").path
        try domainXML(extra: "  <resource register='nope'/>").write(toFile: misspelt, atomically: true, encoding: .utf8)
        defer { FileIO.remove(misspelt) }
        let wrong = try run(["validate", misspelt])
        #expect(wrong.status == 1 && wrong.output.contains("register='nope'"), "\(wrong.output)")
    }
}
