import Foundation
import Synchronization
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// Runs the real `vmshim` binary against the real test guest, the way a user
/// or a container launcher does: its own run root, a serial console written to
/// a file, and the CLI for control.
final class ShimHarness: @unchecked Sendable {
    static let marker = "VMSHIM-GUEST-READY"

    static var binary: String {
        if let explicit = ProcessInfo.processInfo.environment["VMSHIM_BINARY"] { return explicit }
        let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("vmshim").path
        if FileManager.default.isExecutableFile(atPath: besideTests) { return besideTests }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug/vmshim").path
    }

    /// Built by scripts/build-test-guest.sh; the suite fails (not skips) without it.
    static var guestDirectory: String {
        ProcessInfo.processInfo.environment["VMSHIM_TEST_GUEST"] ?? "/var/lib/vmshim/images/tiny"
    }

    let directory: String
    let runRoot: String
    let name: String
    let serialPath: String
    let xmlPath: String
    private var process: Process?
    private var outputPath: String

    struct Options {
        var cmdline = ""
        var onPoweroff = "destroy"
        var onReboot = "restart"
        var onCrash = "destroy"
        var machine = "pc"
        var extraDevices = ""
        var panicDevice = false
        var extraTopLevel = ""
        var vcpuCpuset: String? = nil
        /// Attributes of <os> and elements inside it (UEFI).
        var osAttributes = ""
        var osExtra = ""
        var memoryMiB = 128
    }

    init(name: String, _ options: Options = Options()) throws {
        self.name = name
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("vmshim-it-\(name)-\(UUID().uuidString.prefix(6))").path
        runRoot = directory + "/run"
        serialPath = directory + "/serial.log"
        xmlPath = directory + "/\(name).xml"
        outputPath = directory + "/shim.out"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let guest = Self.guestDirectory
        guard FileManager.default.fileExists(atPath: guest + "/vmlinuz") else {
            throw ShimError(.notFound, "the test guest is missing from \(guest): run scripts/build-test-guest.sh")
        }
        let xml = """
            <domain type='qemu'>
              <name>\(name)</name>
              <uuid>\(UUID().uuidString.lowercased())</uuid>
              <memory unit='MiB'>\(options.memoryMiB)</memory>
              <vcpu\(options.vcpuCpuset.map { " cpuset='\($0)'" } ?? "")>1</vcpu>
              <os\(options.osAttributes)>
                <type arch='x86_64' machine='\(options.machine)'>hvm</type>
                \(options.osExtra)
                <kernel>\(guest)/vmlinuz</kernel>
                <initrd>\(guest)/initrd.img</initrd>
                <cmdline>console=ttyS0 quiet panic=-1 \(options.cmdline)</cmdline>
              </os>
              <features><acpi/><apic/></features>
              <on_poweroff>\(options.onPoweroff)</on_poweroff>
              <on_reboot>\(options.onReboot)</on_reboot>
              <on_crash>\(options.onCrash)</on_crash>
              \(options.extraTopLevel)
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
                <serial type='file'>
                  <source path='\(serialPath)' append='on'/>
                  <target port='0'/>
                </serial>
                \(options.panicDevice ? "<panic model='isa'/>" : "")
                \(options.extraDevices)
                <memballoon model='virtio'/>
              </devices>
            </domain>
            """
        try xml.write(toFile: xmlPath, atomically: true, encoding: .utf8)
    }

    /// Starts `vmshim run` in the background, under `launcher` if given
    /// (e.g. `unshare … --`), which then becomes `shimPID`.
    func start(_ extraArguments: [String] = [], launcher: [String] = []) throws {
        let process = Process()
        let command = launcher + [Self.binary, "run", "--run-root", runRoot] + extraArguments + [xmlPath]
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        output.seekToEndOfFile()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
    }

    var shimPID: Int32 { process?.processIdentifier ?? 0 }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var serial: String { (try? String(contentsOfFile: serialPath, encoding: .utf8)) ?? "" }
    var markerCount: Int { serial.components(separatedBy: Self.marker).count - 1 }

    /// Waits for the shim to exit; its exit status, or nil on timeout.
    func waitForExit(timeout: Duration = .seconds(60)) async -> Int32? {
        guard let process else { return nil }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now > deadline {
                throw ShimError(.timeout, "timed out waiting for \(what)\nshim output:\n\(output)\nserial:\n\(serial.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    func waitForMarker(count: Int = 1, timeout: Duration = .seconds(90)) async throws {
        try await waitFor("\(count) guest marker(s)", timeout: timeout) { markerCount >= count }
    }

    /// Runs a vmshim CLI command; (exit status, stdout, stderr).
    @discardableResult
    func cli(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        var arguments = arguments
        arguments.insert(contentsOf: ["--run-root", runRoot], at: 1)
        process.arguments = arguments
        let outPath = directory + "/cli-\(UUID().uuidString.prefix(6)).out"
        let errPath = outPath + ".err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return (process.terminationStatus, out, err)
    }

    func status() throws -> JSONValue {
        let result = try cli(["status", name, "--json"])
        guard result.status == 0 else {
            throw ShimError(.notFound, "vmshim status failed: \(result.err)")
        }
        return try JSONValue.parse(result.out)
    }

    func state() -> String? { (try? status())?["state"]?.stringValue }

    func waitForState(_ expected: String, timeout: Duration = .seconds(30)) async throws {
        try await waitFor("state \(expected) (now \(state() ?? "none"))", timeout: timeout) { state() == expected }
    }

    var runDirectory: String { runRoot + "/" + name }

    /// QEMU processes whose command line names this domain.
    func qemuPIDs() -> [Int32] {
        FileIO.listDirectory("/proc").compactMap { entry -> Int32? in
            guard let pid = Int32(entry),
                let bytes = try? FileIO.readBytes("/proc/\(entry)/cmdline", limit: 1 << 20)
            else { return nil }
            let argv = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard argv.first?.hasSuffix("qemu-system-x86_64") == true, argv.contains("guest=\(name),debug-threads=on") else {
                return nil
            }
            // A zombie has no cmdline, so a listed pid is alive.
            return pid
        }
    }

    func signalShim(_ signal: Int32) {
        if shimPID > 0 { kill(shimPID, signal) }
    }

    /// Kills whatever is left (shim and QEMU) and removes the scratch directory.
    func tearDown() {
        if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for pid in qemuPIDs() { kill(pid, SIGKILL) }
        FileIO.removeTree(directory)
    }
}
