import Foundation
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// Managed save and restore end to end: the real shim, QEMU and test guest,
/// whose counter on the serial console shows where the guest is.
@Suite(.serialized) struct ManagedSave {
    /// The counter values the guest printed, in order.
    static func counters(_ serial: String) -> [Int] {
        serial.split(whereSeparator: \.isNewline).compactMap { line in
            guard let range = line.range(of: "vmshim-counter ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
    }

    func image(_ vm: ShimHarness) -> SaveImage.Paths {
        SaveImage.Paths(directory: vm.runRoot + "/save", domain: vm.name)
    }

    @Test func aSavedGuestContinuesWhereItStopped() async throws {
        let vm = try ShimHarness(name: "it-save", .init(cmdline: "vmshim.counter"))
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitFor("the counter to reach 2") { (Self.counters(vm.serial).last ?? 0) >= 2 }
        let firstQEMU = try #require(vm.qemuPIDs().first)

        let saved = try vm.cli(["save", vm.name])
        #expect(saved.status == 0, "\(saved.err)")
        #expect(saved.out.contains("saved to \(image(vm).image)") && saved.out.contains("guest running"), "\(saved.out)")
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0, "\(vm.output)")
        #expect(vm.qemuPIDs().isEmpty)
        #expect(!FileIO.exists(vm.runDirectory))
        let header = try SaveImage.read(path: image(vm).image)
        #expect(header.guestWasRunning && header.complete)
        #expect(header.xml.contains("<name>\(vm.name)</name>"))
        // Listed as saved while it has no run directory.
        let listed = try JSONValue.parse(try vm.cli(["list", "--json"]).out).arrayValue ?? []
        let entry = try #require(listed.first { $0["name"]?.stringValue == vm.name })
        #expect(entry["state"]?.stringValue == "saved" && entry["reason"]?.stringValue == "running")
        #expect(entry["image"]?.stringValue == image(vm).image)
        #expect(entry["uuid"]?.stringValue != nil && entry["shimAlive"]?.boolValue == false)
        let before = Self.counters(vm.serial)
        let last = try #require(before.last)

        // Time passes while it is saved; the guest must not notice.
        try await Task.sleep(for: .seconds(2))
        #expect(Self.counters(vm.serial) == before)
        try vm.start()
        try await vm.waitForState("running")
        #expect(try vm.status()["reason"]?.stringValue == "restored")
        #expect(vm.qemuPIDs().first != firstQEMU)
        try await vm.waitFor("two counter lines after the restore") { Self.counters(vm.serial).count >= before.count + 2 }
        let after = Array(Self.counters(vm.serial).dropFirst(before.count))
        // The next line is the next number: no reboot (which would restart at 0), nothing skipped.
        #expect(after.first == last + 1, "before \(before), after \(after)")
        #expect(after == Array((last + 1)..<(last + 1 + after.count)), "\(after)")
        #expect(vm.markerCount == 1, "the guest booted again:\n\(vm.serial)")
        #expect(!FileIO.exists(image(vm).image), "the image is deleted once restored")
        #expect(try vm.cli(["destroy", vm.name]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    @Test func aGuestSavedPausedWithBypassCacheComesBackPaused() async throws {
        let vm = try ShimHarness(name: "it-save-paused", .init(cmdline: "vmshim.counter"))
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitFor("the counter to start") { !Self.counters(vm.serial).isEmpty }
        #expect(try vm.cli(["pause", vm.name]).status == 0)
        let saved = try vm.cli(["save", vm.name, "--bypass-cache"])
        #expect(saved.status == 0 && saved.out.contains("guest paused"), "\(saved.out)\(saved.err)")
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0, "\(vm.output)")
        #expect(try SaveImage.read(path: image(vm).image).guestWasRunning == false)
        let before = Self.counters(vm.serial)

        try vm.start(["--bypass-cache"])
        try await vm.waitForState("paused")
        #expect(try vm.status()["reason"]?.stringValue == "restored")
        try await Task.sleep(for: .milliseconds(1500))
        #expect(Self.counters(vm.serial) == before, "a paused guest must not run")
        #expect(try vm.cli(["resume", vm.name]).status == 0)
        try await vm.waitFor("the counter to go on") { Self.counters(vm.serial).count > before.count }
        #expect(Self.counters(vm.serial)[before.count] == (before.last ?? -1) + 1)
        #expect(try vm.cli(["destroy", vm.name]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// kill -9 of the shim in the middle of a save: its successor undoes the
    /// save, the guest runs on, and nothing is left that would be restored.
    @Test func anInterruptedSaveLeavesTheGuestRunning() async throws {
        let vm = try ShimHarness(name: "it-save-kill", .init(cmdline: "vmshim.counter"))
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitFor("the counter to start") { !Self.counters(vm.serial).isEmpty }
        let qemu = try #require(vm.qemuPIDs().first)
        // 1 MiB/s keeps the save running for many seconds.
        let saving = Process()
        saving.executableURL = URL(fileURLWithPath: ShimHarness.binary)
        saving.arguments = ["save", "--run-root", vm.runRoot, "--bandwidth", "1", vm.name]
        saving.standardOutput = FileHandle.nullDevice
        saving.standardError = FileHandle.nullDevice
        try saving.run()
        try await vm.waitFor("the save to write") { (FileIO.size(image(vm).partial) ?? 0) > 65536 }
        #expect(try StatusFile.read(from: vm.runDirectory + "/status.json").pendingSave?.guestWasRunning == true)
        vm.signalShim(SIGKILL)
        _ = await vm.waitForExit(timeout: .seconds(10))
        saving.waitUntilExit()
        #expect(saving.terminationStatus != 0)
        #expect(vm.qemuPIDs() == [qemu], "QEMU outlives its shim")

        try vm.start()
        try await vm.waitForState("running")
        #expect(vm.qemuPIDs() == [qemu])
        #expect(!FileIO.exists(image(vm).partial) && !FileIO.exists(image(vm).image))
        #expect(try StatusFile.read(from: vm.runDirectory + "/status.json").pendingSave == nil)
        let count = Self.counters(vm.serial).count
        try await vm.waitFor("the counter to go on") { Self.counters(vm.serial).count >= count + 2 }
        #expect(vm.output.contains("undid a managed save"), "\(vm.output)")
        #expect(try vm.cli(["destroy", vm.name]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// A save that fails half-way (here: the partial image cannot be
    /// created, which is found out after the guest was paused) leaves the
    /// guest running and no image.
    @Test func aFailedSaveLeavesTheGuestRunning() async throws {
        let vm = try ShimHarness(name: "it-save-fail", .init(cmdline: "vmshim.counter"))
        defer { vm.tearDown() }
        let paths = image(vm)
        try FileManager.default.createDirectory(atPath: paths.partial, withIntermediateDirectories: true)
        try vm.start()
        try await vm.waitFor("the counter to start") { !Self.counters(vm.serial).isEmpty }
        let failed = try vm.cli(["save", vm.name])
        #expect(failed.status == 1)
        #expect(failed.err.contains("cannot open the managed save image \(paths.partial)") && failed.err.contains("the guest runs on"), "\(failed.err)")
        try await vm.waitForState("running")
        #expect(try vm.status()["reason"]?.stringValue == "save-failed")
        #expect(!FileIO.exists(paths.image))
        let count = Self.counters(vm.serial).count
        try await vm.waitFor("the counter to go on") { Self.counters(vm.serial).count > count }
        // Once the obstacle is gone the same shim saves.
        FileIO.removeTree(paths.partial)
        #expect(try vm.cli(["save", vm.name]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
        #expect(FileIO.exists(paths.image))
    }

    /// A damaged image is refused with the reason, kept aside, and the next
    /// start boots cold; `--force-boot` discards a good one.
    @Test func aDamagedImageIsRefusedAndKeptAside() async throws {
        let vm = try ShimHarness(name: "it-save-bad")
        defer { vm.tearDown() }
        let paths = image(vm)
        for damage in ["truncate", "stream"] {
            let booted = vm.markerCount
            try vm.start()
            try await vm.waitForMarker(count: booted + 1)
            #expect(try vm.cli(["save", vm.name]).status == 0)
            #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
            let handle = try #require(FileHandle(forUpdatingAtPath: paths.image))
            if damage == "truncate" {
                try handle.truncate(atOffset: UInt64(try #require(FileIO.size(paths.image))) - 100)
            } else {
                // Header and length intact, the RAM section garbage: only QEMU can tell.
                let header = try SaveImage.read(path: paths.image)
                try handle.seek(toOffset: header.streamOffset + 4096)
                handle.write(Data(repeating: 0xA5, count: 1 << 20))
            }
            try handle.close()
            try vm.start()
            #expect(await vm.waitForExit(timeout: .seconds(60)) == 1, "\(damage)")
            let out = vm.output
            #expect(out.contains("cannot restore domain '\(vm.name)' from its managed save image"), "\(out)")
            #expect(out.contains(damage == "truncate" ? "is truncated" : "QEMU exited while loading it"), "\(out)")
            #expect(out.contains("it was moved to \(paths.corrupt)"), "\(out)")
            #expect(FileIO.exists(paths.corrupt) && !FileIO.exists(paths.image))
            #expect(vm.qemuPIDs().isEmpty, "no QEMU is left behind")
            #expect(!FileIO.exists(vm.runDirectory), "no run directory is left behind")
            // The next start boots cold.
            let markers = vm.markerCount
            try vm.start()
            try await vm.waitForMarker(count: markers + 1)
            FileIO.remove(paths.corrupt)
            #expect(try vm.cli(["destroy", vm.name]).status == 0)
            _ = await vm.waitForExit(timeout: .seconds(30))
        }

        let booted = vm.markerCount
        try vm.start()
        try await vm.waitForMarker(count: booted + 1)
        #expect(try vm.cli(["save", vm.name]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
        let markers = vm.markerCount
        try vm.start(["--force-boot"])
        try await vm.waitForMarker(count: markers + 1)
        #expect(!FileIO.exists(paths.image), "--force-boot discards the image")
        #expect(vm.output.contains("--force-boot: discarding the managed save image"))
        #expect(try vm.cli(["destroy", vm.name]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// libvirt's startupPolicy table, "not cold" column: a requisite cdrom
    /// whose medium vanished while saved comes back with an empty tray; an
    /// optional hard disk that vanished fails the restore, which keeps the
    /// image so the disk can be put back.
    @Test func restoreAppliesTheStartupPolicyTable() async throws {
        let scratch = try Fixtures.scratchDirectory("save-policy")
        defer { FileIO.removeTree(scratch) }
        let iso = scratch + "/media.iso", data = scratch + "/data.raw"
        #expect(try Fixtures.qemuImg(["create", "-q", "-f", "raw", iso, "1M"], in: scratch) == 0)
        #expect(try Fixtures.qemuImg(["create", "-q", "-f", "raw", data, "1M"], in: scratch) == 0)
        let vm = try ShimHarness(
            name: "it-save-policy",
            .init(extraDevices: """
                <disk type='file' device='cdrom'>
                  <driver name='qemu' type='raw'/>
                  <source file='\(iso)' startupPolicy='requisite'/>
                  <target dev='hdc' bus='ide'/>
                  <readonly/>
                </disk>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='raw'/>
                  <source file='\(data)' startupPolicy='optional'/>
                  <target dev='vdb' bus='virtio'/>
                </disk>
                """))
        defer { vm.tearDown() }
        let paths = image(vm)
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        #expect(try vm.cli(["save", vm.name]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)

        // The optional hard disk is gone: the saved guest has it, so no restore.
        try FileManager.default.moveItem(atPath: data, toPath: data + ".away")
        try vm.start()
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 1)
        #expect(vm.output.contains("Cannot access storage file '\(data)'"), "\(vm.output)")
        #expect(vm.output.contains("disk 'vdb' was part of the guest when it was saved"), "\(vm.output)")
        #expect(FileIO.exists(paths.image), "the image is kept for when the disk is back")
        #expect(vm.qemuPIDs().isEmpty)

        // Disk back, ISO gone: requisite drops the medium on a restore.
        try FileManager.default.moveItem(atPath: data + ".away", toPath: data)
        FileIO.remove(iso)
        try vm.start()
        try await vm.waitForState("paused")
        #expect(try vm.status()["reason"]?.stringValue == "restored")
        #expect(vm.output.contains("disk 'hdc' starts with an empty tray"), "\(vm.output)")
        let block = try vm.cli(["qmp", vm.name, #"{"execute":"query-block"}"#]).out
        let devices = try JSONValue.parse(block)["return"]?.arrayValue ?? []
        let cdrom = devices.first { $0["qdev"]?.stringValue?.contains("ide0-1-0") == true }
        #expect(cdrom != nil && cdrom?["inserted"] == nil, "\(block)")
        #expect(devices.contains { $0["inserted"]?["file"]?.stringValue == data }, "\(block)")
        let live = try vm.cli(["status", vm.name, "--xml"]).out
        #expect(!live.contains(iso) && live.contains(data), "\(live)")
        #expect(!FileIO.exists(paths.image))
        #expect(try vm.cli(["destroy", vm.name]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }
}
