import Foundation
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// Runs the real `vmshim-registrar` binary on a scratch socket and state
/// directory, and can kill -9 and restart it like a crash would.
final class RegistrarHarness: @unchecked Sendable {
    static var binary: String {
        if let explicit = ProcessInfo.processInfo.environment["VMSHIM_REGISTRAR_BINARY"] { return explicit }
        return URL(fileURLWithPath: ShimHarness.binary).deletingLastPathComponent()
            .appendingPathComponent("vmshim-registrar").path
    }

    let directory: String
    let socket: String
    let stateDirectory: String
    let extraArguments: [String]
    private var process: Process?
    private let outputPath: String

    init(_ extraArguments: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("vmshim-reg-\(UUID().uuidString.prefix(6))").path
        socket = directory + "/run/registrar.sock"
        stateDirectory = directory + "/state"
        outputPath = directory + "/registrar.out"
        self.extraArguments = extraArguments
        try FileManager.default.createDirectory(atPath: directory + "/run", withIntermediateDirectories: true)
    }

    var client: RegistrarClient { RegistrarClient(socketPath: socket, timeout: .seconds(10)) }
    var pid: Int32 { process?.processIdentifier ?? 0 }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var shimArguments: [String] { ["--registrar", socket] }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--socket", socket, "--state-dir", stateDirectory, "--grace", "3"] + extraArguments
        if !FileManager.default.fileExists(atPath: outputPath) {
            _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        output.seekToEndOfFile()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(30)
        while !UnixSocket.isListening(path: socket) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                throw ShimError(.timeout, "the registrar did not start serving \(socket):\n\(self.output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func kill9() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() -> Int32? {
        guard let process else { return nil }
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Polls ListDomains until `condition` holds; the last listing.
    @discardableResult
    func waitForDomains(
        _ what: String, timeout: Duration = .seconds(30), _ condition: ([Vmshim_Registrar_V1_Domain]) -> Bool
    ) async throws -> [Vmshim_Registrar_V1_Domain] {
        let deadline = ContinuousClock.now + timeout
        var last: [Vmshim_Registrar_V1_Domain] = []
        while true {
            if let domains = try? await client.listDomains() {
                last = domains
                if condition(domains) { return domains }
            }
            if ContinuousClock.now > deadline {
                let seen = last.map { "\($0.identity.name)=\(RegistrationWire.name($0.status.state))/\($0.status.qemuPid)/\($0.connected)" }
                throw ShimError(.timeout, "timed out after \(timeout) waiting for \(what); last listing: \(seen)\nregistrar:\n\(output.suffix(3000))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func tearDown() {
        kill9()
        FileIO.removeTree(directory)
    }
}
