// vmshim-registrar-load: N simulated shims against a real vmshim-registrar.
//
// Each simulated shim opens its own connection and Register stream, sends a
// full snapshot (identity, status, resources with one disk), waits for
// Registered, and after losing the registrar reconnects with the real shim's
// backoff (RegistrationClient.backoff). The tool starts the registrar,
// measures, kills it with SIGKILL, starts it again and measures again, then
// prints one JSON object. Used by bench/registrar.py.
//
//   vmshim-registrar-load --registrar PATH --dir DIR [--shims 1000] [--list-calls 200]
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix
import ShimKit
import Synchronization

struct Options {
    var registrar = ""
    var directory = ""
    var shims = 1000
    var listCalls = 200

    static func parse() -> Options {
        var options = Options()
        var arguments = CommandLine.arguments.dropFirst()
        while let name = arguments.popFirst() {
            guard let value = arguments.popFirst() else { usage("\(name) needs a value") }
            switch name {
            case "--registrar": options.registrar = value
            case "--dir": options.directory = value
            case "--shims": options.shims = Int(value) ?? 0
            case "--list-calls": options.listCalls = Int(value) ?? 0
            default: usage("unknown option \(name)")
            }
        }
        guard !options.registrar.isEmpty, !options.directory.isEmpty, options.shims > 0, options.listCalls > 0 else {
            usage("--registrar and --dir are required; --shims and --list-calls must be positive")
        }
        return options
    }

    static func usage(_ problem: String) -> Never {
        FileHandle.standardError.write(Data("vmshim-registrar-load: \(problem)\nusage: vmshim-registrar-load --registrar PATH --dir DIR [--shims N] [--list-calls N]\n".utf8))
        exit(2)
    }
}

/// Which simulated shims are registered with the current registrar.
final class Tracker: Sendable {
    private let state = Mutex<(registered: Set<Int>, generation: Int)>(([], 0))
    func registered(_ index: Int) { state.withLock { _ = $0.registered.insert(index) } }
    func lost(_ index: Int) { state.withLock { _ = $0.registered.remove(index) } }
    var count: Int { state.withLock { $0.registered.count } }
    func contains(_ index: Int) -> Bool { state.withLock { $0.registered.contains(index) } }
}

let options = Options.parse()
let socket = options.directory + "/run/registrar.sock"
let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
let tracker = Tracker()
let myIdentity = ProcessIdentity.of(pid: getpid())

func snapshot(_ index: Int, epoch: UInt64) -> Vmshim_Registrar_V1_Snapshot {
    var snapshot = Vmshim_Registrar_V1_Snapshot()
    snapshot.epoch = epoch
    let hex = String(index, radix: 16)
    snapshot.identity.uuid = "10ad0000-0000-4000-8000-" + String(repeating: "0", count: 12 - hex.count) + hex
    snapshot.identity.name = "load-\(index)"
    snapshot.identity.shimPid = getpid()
    snapshot.identity.shimVersion = VMShimVersion.current
    snapshot.identity.runDirectory = "/run/vmshim/load-\(index)"
    snapshot.identity.controlSocket = "/run/vmshim/load-\(index)/control.sock"
    snapshot.identity.readOnlyControlSocket = "/run/vmshim/load-\(index)/control-ro.sock"
    snapshot.identity.statusFile = "/run/vmshim/load-\(index)/status.json"
    snapshot.identity.logFile = "/var/log/vmshim/load-\(index).log"
    snapshot.identity.vcpus = 2
    snapshot.identity.vcpusMax = 2
    snapshot.identity.memoryKib = 2 * 1024 * 1024
    snapshot.identity.maxMemoryKib = 2 * 1024 * 1024
    snapshot.identity.qemuVersion = "7.2.15"
    snapshot.identity.qemuBinary = "/usr/bin/qemu-system-x86_64"
    // This process stands in for QEMU: alive, so never reported gone.
    snapshot.status.state = .running
    snapshot.status.reason = "booted"
    snapshot.status.qemuPid = getpid()
    snapshot.status.qemuStartTime = myIdentity?.startTime ?? 0
    snapshot.status.startedAtUnix = Int64(time(nil))
    snapshot.resources.sampledAtUnixMicros = Int64(Date().timeIntervalSince1970 * 1_000_000)
    snapshot.resources.balloonActualKib = 2 * 1024 * 1024
    snapshot.resources.qemuRssKib = 300_000 + UInt64(index)
    snapshot.resources.qemuPssKib = 290_000
    snapshot.resources.qemuCpuTimeMicros = 12_345_678
    snapshot.resources.shimRssKib = 9_000
    snapshot.resources.shimPssKib = 2_000
    var disk = Vmshim_Registrar_V1_DiskAccounting()
    disk.target = "vda"
    disk.alias = "virtio-disk0"
    disk.source = "/var/lib/images/load-\(index).qcow2"
    disk.capacityBytes = 20 << 30
    disk.allocationBytes = 3 << 30
    disk.readBytes = 123_456_789
    disk.writeBytes = 98_765_432
    disk.readOps = 4567
    disk.writeOps = 3456
    snapshot.resources.disks = [disk]
    return snapshot
}

/// One simulated shim, for ever: register, hold the stream, reconnect.
func simulate(_ index: Int) async {
    var failures = 0
    var epoch: UInt64 = 0
    while !Task.isCancelled {
        epoch += 1
        do {
            let transport = try HTTP2ClientTransport.Posix(
                target: .unixDomainSocket(path: socket), transportSecurity: .plaintext,
                config: .defaults { $0.backoff.initial = .milliseconds(50) }, eventLoopGroup: group)
            try await withGRPCClient(transport: transport) { client in
                let registrar = Vmshim_Registrar_V1_Registrar.Client(wrapping: client)
                var options = CallOptions.defaults
                options.waitForReady = false
                let message = Vmshim_Registrar_V1_ShimMessage.with { $0.snapshot = snapshot(index, epoch: epoch) }
                try await registrar.register(
                    options: options,
                    requestProducer: { writer in
                        try await writer.write(message)
                        // Hold the stream open until the registrar goes.
                        try await Task.sleep(for: .seconds(3600))
                    },
                    onResponse: { response in
                        for try await reply in response.messages {
                            if case .registered = reply.kind { tracker.registered(index) }
                        }
                    })
            }
        } catch {}
        let registered = tracker.contains(index)
        tracker.lost(index)
        failures = registered ? 1 : failures + 1
        try? await Task.sleep(for: RegistrationClient.backoff(failures: failures))
    }
}

func startRegistrar() throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: options.registrar)
    process.arguments = [
        "--socket", socket, "--state-dir", options.directory + "/state", "--run-root", options.directory + "/empty",
        "--log-level", "warning",
    ]
    process.standardOutput = FileHandle.nullDevice
    let log = options.directory + "/registrar.log"
    if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    handle.seekToEndOfFile()
    process.standardError = handle
    try process.run()
    return process
}

func waitUntil(_ what: String, timeout: Duration = .seconds(120), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { throw ShimError(.timeout, "timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(2))
    }
}

func milliseconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) * 1000 + Double(attoseconds) / 1e15
}

/// ListDomains latency over one connection, as a monitoring client sees it.
func listLatencies() async throws -> (p50: Double, p99: Double, max: Double, count: Int) {
    let transport = try HTTP2ClientTransport.Posix(
        target: .unixDomainSocket(path: socket), transportSecurity: .plaintext, config: .defaults, eventLoopGroup: group)
    return try await withGRPCClient(transport: transport) { client in
        let registrar = Vmshim_Registrar_V1_Registrar.Client(wrapping: client)
        var samples: [Double] = []
        var count = 0
        for call in 0..<(options.listCalls + 10) {
            let began = ContinuousClock.now
            let response = try await registrar.listDomains(Vmshim_Registrar_V1_ListDomainsRequest())
            let elapsed = milliseconds(ContinuousClock.now - began)
            count = response.domains.count
            if call >= 10 { samples.append(elapsed) }  // the first calls warm up
        }
        samples.sort()
        // Where a call's time goes: protobuf encode (server) and decode (client).
        let full = try await registrar.listDomains(Vmshim_Registrar_V1_ListDomainsRequest())
        let encodeBegan = ContinuousClock.now
        let bytes: [UInt8] = try full.serializedBytes()
        let encode = milliseconds(ContinuousClock.now - encodeBegan)
        let decodeBegan = ContinuousClock.now
        _ = try Vmshim_Registrar_V1_ListDomainsResponse(serializedBytes: bytes)
        let decode = milliseconds(ContinuousClock.now - decodeBegan)
        var bareRequest = Vmshim_Registrar_V1_ListDomainsRequest()
        bareRequest.withoutResources = true
        var bare: [Double] = []
        var bareBytes = 0
        for _ in 0..<50 {
            let began = ContinuousClock.now
            let response = try await registrar.listDomains(bareRequest)
            bare.append(milliseconds(ContinuousClock.now - began))
            bareBytes = try (response.serializedBytes() as [UInt8]).count
        }
        bare.sort()
        FileHandle.standardError.write(Data("ListDomains without resources: \(bareBytes) bytes, p50 \(bare[25]) ms\n".utf8))
        FileHandle.standardError.write(Data("ListDomains reply: \(bytes.count) bytes, encode \(encode) ms, decode \(decode) ms\n".utf8))
        func percentile(_ p: Double) -> Double { samples[min(samples.count - 1, Int((Double(samples.count) * p).rounded(.up)) - 1)] }
        return (percentile(0.5), percentile(0.99), samples.last ?? 0, count)
    }
}

/// VmRSS splits into RssAnon (the heap: what the shims' connections and
/// the registry hold) and RssFile (the mapped binary and libraries, clean
/// pages shared with the page cache).
func residentKiB(_ pid: Int32) -> (rss: Int, hwm: Int, anon: Int, file: Int) {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0, 0, 0) }
    func field(_ name: String) -> Int {
        text.split(separator: "\n").first { $0.hasPrefix(name) }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
    }
    return (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"), field("RssFile:"))
}

try FileManager.default.createDirectory(atPath: options.directory + "/run", withIntermediateDirectories: true)
try FileManager.default.createDirectory(atPath: options.directory + "/empty", withIntermediateDirectories: true)
let idleStart = ContinuousClock.now
var registrar = try startRegistrar()
try await waitUntil("the registrar's socket") { UnixSocket.isListening(path: socket) }
let idleRSS = residentKiB(registrar.processIdentifier)
_ = idleStart

let firstStart = ContinuousClock.now
let sims = (0..<options.shims).map { index in Task { await simulate(index) } }
try await waitUntil("\(options.shims) registrations") { tracker.count == options.shims }
let firstRegistration = ContinuousClock.now - firstStart
try await Task.sleep(for: .milliseconds(500))
let before = try await listLatencies()
let loadedRSS = residentKiB(registrar.processIdentifier)

// kill -9 and restart: the clock runs from the new registrar's exec.
kill(registrar.processIdentifier, SIGKILL)
registrar.waitUntilExit()
try await waitUntil("the shims to notice") { tracker.count == 0 }
let restartBegan = ContinuousClock.now
registrar = try startRegistrar()
try await waitUntil("the new registrar's socket") { UnixSocket.isListening(path: socket) }
let listening = ContinuousClock.now - restartBegan
try await waitUntil("\(options.shims) registrations again") { tracker.count == options.shims }
let reRegistration = ContinuousClock.now - restartBegan
try await Task.sleep(for: .milliseconds(500))
let after = try await listLatencies()
let afterRSS = residentKiB(registrar.processIdentifier)

for sim in sims { sim.cancel() }
kill(registrar.processIdentifier, SIGTERM)
registrar.waitUntilExit()

func fixed(_ value: Double) -> String { String(format: "%.2f", value) }
print("""
    {"shims": \(options.shims), "first_registration_ms": \(fixed(milliseconds(firstRegistration))), \
    "restart_listening_ms": \(fixed(milliseconds(listening))), "reregistration_after_restart_ms": \(fixed(milliseconds(reRegistration))), \
    "list_domains_count": \(after.count), "list_p50_ms": \(fixed(before.p50)), "list_p99_ms": \(fixed(before.p99)), "list_max_ms": \(fixed(before.max)), \
    "list_after_restart_p50_ms": \(fixed(after.p50)), "list_after_restart_p99_ms": \(fixed(after.p99)), \
    "registrar_idle_rss_kib": \(idleRSS.rss), "registrar_rss_kib": \(loadedRSS.rss), "registrar_hwm_kib": \(loadedRSS.hwm), \
    "registrar_rss_anon_kib": \(loadedRSS.anon), "registrar_rss_file_kib": \(loadedRSS.file), "registrar_idle_rss_anon_kib": \(idleRSS.anon), \
    "registrar_rss_after_restart_kib": \(afterRSS.rss), "registrar_hwm_after_restart_kib": \(afterRSS.hwm)}
    """)
exit(0)
