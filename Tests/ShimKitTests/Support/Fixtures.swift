import Foundation
import Synchronization
@testable import ShimKit

/// Paths and deterministic environments shared by the tests.
enum Fixtures {
    static let directory: String = {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures").path
        }
        return url.path
    }()

    /// The source tree's fixture directory (for regenerating golden files).
    static let sourceDirectory: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path

    /// libvirt's own test XMLs with their expected argv (LGPL-2.1-or-later;
    /// provenance and licence in its README.md).
    static let corpusDirectory: String = sourceDirectory + "/libvirt-tests"

    static func read(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }

    /// MACs 52:54:00:00:00:01, :02, … and VNC port 5900 on every call.
    static func environment(name: String) -> DomainDefaults.Environment {
        let counter = Mutex(0)
        return DomainDefaults.Environment(
            runDirectory: RunDirectory(root: "/run/vmshim", name: name),
            randomMAC: {
                let n = counter.withLock { value -> Int in
                    value += 1
                    return value
                }
                let hex = String(n, radix: 16)
                return "52:54:00:00:00:" + (hex.count == 1 ? "0" + hex : hex)
            },
            freeDisplayPort: { _, taken in (5900...65535).first { !taken.contains($0) } ?? 5900 },
            firmwareDescriptors: { FirmwareDescriptor.loadSystem(directories: [firmwareDirectory]) },
            nvramDirectory: "/var/lib/vmshim/nvram",
            // A host with 2 MiB pages on /dev/hugepages and 1 GiB pages on /dev/hugepages1G.
            hugetlbfsMounts: {
                [Hugepages.Mount(path: "/dev/hugepages", pageSizeKiB: 2048), Hugepages.Mount(path: "/dev/hugepages1G", pageSizeKiB: 1_048_576)]
            },
            defaultHugepageSizeKiB: { 2048 })
    }

    /// Debian 12's OVMF descriptors (package ovmf 2022.11), so firmware
    /// selection does not depend on the host.
    static let firmwareDirectory: String = directory + "/firmware"

    static let fixedNow: Int64 = 1_790_000_000

    static func prepare(_ xml: String, file: String = "test.xml") throws -> DomainSpec {
        let parsed = try DomainParser(file: file).parse(xml)
        return try DomainDefaults(file: file, environment: environment(name: parsed.spec.name)).apply(parsed.spec)
    }

    static func plan(_ xml: String, file: String = "test.xml") throws -> LaunchPlan {
        let spec = try prepare(xml, file: file)
        return try QEMUCommandLine.plan(
            spec,
            context: QEMUCommandLine.Context(
                runDirectory: RunDirectory(root: "/run/vmshim", name: spec.name), now: fixedNow, localTimeOffset: 3600))
    }

    /// A fresh directory under the temporary directory; the caller removes it.
    static func scratchDirectory(_ prefix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Runs the real qemu-img (from qemu-utils) in `directory`; returns its exit status.
    static func qemuImg(_ arguments: [String], in directory: String? = nil) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-img")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
