import Foundation
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// The shim end to end: real vmshim binary, real QEMU (TCG), real test guest.
/// Serialized: each boot takes a core for a couple of seconds.
@Suite(.serialized) struct Lifecycle {
    @Test func guestPoweroffEndsTheShimWithZero() async throws {
        let vm = try ShimHarness(name: "it-poweroff", .init(cmdline: "vmshim.action=poweroff"))
        defer { vm.tearDown() }
        try vm.start()
        let status = await vm.waitForExit(timeout: .seconds(90))
        #expect(status == 0, "\(vm.output)")
        #expect(vm.markerCount == 1)
        #expect(vm.output.contains("shut down by its guest"))
        #expect(!FileIO.exists(vm.runDirectory), "run directory left behind")
        #expect(vm.qemuPIDs().isEmpty, "QEMU left behind")
    }

    @Test func statusPauseResumeAndQMPThroughTheCLI() async throws {
        let vm = try ShimHarness(name: "it-control")
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker()
        let status = try vm.status()
        #expect(status["name"]?.stringValue == "it-control")
        #expect(status["state"]?.stringValue == "running")
        #expect(status["shimPid"]?.int64Value == Int64(vm.shimPID))
        let qemuPID = try #require(status["qemuPid"]?.int64Value)
        #expect(vm.qemuPIDs() == [Int32(qemuPID)])
        // The status file on disk carries the same and the live XML.
        let file = try StatusFile.read(from: vm.runDirectory + "/status.json")
        #expect(file.qemu?.pid == Int32(qemuPID))
        #expect(file.liveXML.contains("<name>it-control</name>"))
        #expect(FileIO.exists(file.qmpSocket) && FileIO.exists(file.controlSocket))

        // NAME may be the UUID.
        let byUUID = try vm.cli(["status", file.uuid, "--json"])
        #expect(byUUID.status == 0 && byUUID.out.contains("\"it-control\""))

        #expect(try vm.cli(["pause", "it-control"]).status == 0)
        #expect(vm.state() == "paused")
        let paused = try vm.cli(["qmp", "it-control", #"{"execute":"query-status"}"#])
        #expect(paused.status == 0)
        #expect(try JSONValue.parse(paused.out)["return"]?["status"]?.stringValue == "paused")
        #expect(try vm.cli(["resume", "it-control"]).status == 0)
        #expect(vm.state() == "running")

        let bad = try vm.cli(["qmp", "it-control", #"{"execute":"no-such-command"}"#])
        #expect(bad.status == 1)
        #expect(bad.out.contains("CommandNotFound"))
        let notJSON = try vm.cli(["qmp", "it-control", "{not json"])
        #expect(notJSON.status != 0 && notJSON.err.contains("JSON"))

        let list = try vm.cli(["list"])
        #expect(list.out.contains("it-control") && list.out.contains("running"))
        let unknown = try vm.cli(["status", "no-such-domain"])
        #expect(unknown.status != 0 && unknown.err.contains("no-such-domain"))

        let shutdown = try vm.cli(["shutdown", "it-control"])
        #expect(shutdown.status == 0, "\(shutdown.err)")
        #expect(shutdown.out.contains("shutoff"))
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
        #expect(!FileIO.exists(vm.runDirectory))
    }

    @Test func sigtermShutsTheGuestDownGracefully() async throws {
        let vm = try ShimHarness(name: "it-sigterm")
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker()
        vm.signalShim(SIGTERM)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0, "\(vm.output)")
        #expect(vm.output.contains("shut down"))
        #expect(!vm.output.contains("did not power off"))
        #expect(vm.qemuPIDs().isEmpty)
        #expect(!FileIO.exists(vm.runDirectory))
        #expect(try Self.vmCgroups(of: vm.shimPID, name: "it-refused").allSatisfy { !FileIO.exists($0) }, "the cgroup goes too")
    }

    /// Where `vmshim-<name>` would be, in every hierarchy `pid` belongs to.
    static func vmCgroups(of pid: Int32, name: String) throws -> [String] {
        let cgroups = try Cgroups.host()
        return cgroups.hierarchies.map { $0.shimDirectory + "/" + Cgroups.leafName(domain: name) }
    }

    /// By default QEMU gets a cgroup of its own under the shim's, in every
    /// hierarchy, with the XML's limits; it goes away with the VM.
    @Test func qemuGetsADedicatedCgroupWithTheLimits() async throws {
        var options = ShimHarness.Options()
        options.extraTopLevel = """
            <memtune><hard_limit unit='MiB'>768</hard_limit><soft_limit unit='MiB'>512</soft_limit></memtune>
            <cputune><shares>512</shares><period>100000</period><quota>50000</quota></cputune>
            """
        let vm = try ShimHarness(name: "it-cgroup", options)
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker()
        let qemu = try #require(vm.qemuPIDs().first)
        // The shim's own membership, read from outside: this test process is in the same cgroups.
        let ours = try FileIO.readString("/proc/self/cgroup").split(whereSeparator: \.isNewline)
        let qemus = try FileIO.readString("/proc/\(qemu)/cgroup").split(whereSeparator: \.isNewline)
        for line in ours where !line.hasPrefix("0::") {
            let prefix = line[..<(line.lastIndex(of: ":") ?? line.endIndex)]
            let path = String(line[line.index(after: line.lastIndex(of: ":") ?? line.startIndex)...])
            let expected = (path == "/" ? "" : path) + "/vmshim-it-cgroup"
            #expect(qemus.contains { $0 == prefix + ":" + expected }, "\(line) → QEMU has \(qemus)")
        }
        // Every thread of QEMU, not only the main one.
        let directories = try Self.vmCgroups(of: getpid(), name: "it-cgroup")
        let memory = try #require(directories.first { $0.contains("/memory") })
        let tasks = try FileIO.readString(memory + "/tasks").split(whereSeparator: \.isNewline).compactMap { Int32($0) }
        let threads = FileIO.listDirectory("/proc/\(qemu)/task").compactMap { Int32($0) }
        #expect(threads.count > 1 && Set(threads).isSubset(of: Set(tasks)), "threads \(threads), tasks \(tasks)")
        #expect(try FileIO.readString(memory + "/memory.limit_in_bytes").trimmingWhitespace() == "\(768 << 20)")
        #expect(try FileIO.readString(memory + "/memory.soft_limit_in_bytes").trimmingWhitespace() == "\(512 << 20)")
        let cpu = try #require(directories.first { $0.contains("/cpu/") })
        #expect(try FileIO.readString(cpu + "/cpu.shares").trimmingWhitespace() == "512")
        #expect(try FileIO.readString(cpu + "/cpu.cfs_quota_us").trimmingWhitespace() == "50000")
        let status = try StatusFile.read(from: vm.runDirectory + "/status.json")
        #expect(Set(status.cgroupDirectories) == Set(directories))

        #expect(try vm.cli(["destroy", "it-cgroup"]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
        for directory in directories { #expect(!FileIO.exists(directory), "\(directory) was left behind") }
    }

    /// A guest that ignores the power button is stopped after --shutdown-timeout.
    @Test func sigtermQuitsQEMUAfterTheTimeout() async throws {
        let vm = try ShimHarness(name: "it-sigterm-timeout", .init(cmdline: "vmshim.noacpid"))
        defer { vm.tearDown() }
        try vm.start(["--shutdown-timeout", "2"])
        try await vm.waitForMarker()
        let sent = ContinuousClock.now
        vm.signalShim(SIGINT)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0, "\(vm.output)")
        #expect(ContinuousClock.now - sent >= .seconds(2))
        #expect(vm.output.contains("did not power off"))
        #expect(vm.qemuPIDs().isEmpty)
        #expect(!FileIO.exists(vm.runDirectory))
    }

    @Test func aQEMUCrashEndsTheShimNonZeroWithTheReason() async throws {
        let vm = try ShimHarness(name: "it-crash")
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker()
        let qemuPID = try #require(vm.qemuPIDs().first)
        kill(qemuPID, SIGKILL)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == ShimOutcome.Code.qemuCrashed)
        #expect(vm.output.contains("SIGKILL"))
        // The reason and where QEMU's log is (a SIGKILLed QEMU prints nothing).
        #expect(vm.output.contains("QEMU wrote nothing to its log") || vm.output.contains("last QEMU log lines"))
        #expect(vm.output.contains(vm.runRoot + "/log/it-crash.log"))
        #expect(!FileIO.exists(vm.runDirectory))
    }

    @Test func onCrashDestroyEndsAPanickedGuest() async throws {
        let vm = try ShimHarness(name: "it-panic", .init(cmdline: "vmshim.action=panic", panicDevice: true))
        defer { vm.tearDown() }
        try vm.start()
        #expect(await vm.waitForExit(timeout: .seconds(90)) == ShimOutcome.Code.guestPanicked, "\(vm.output)")
        #expect(vm.output.contains("panicked"))
        #expect(vm.qemuPIDs().isEmpty)
    }

    @Test func onRebootRestartKeepsTheSameQEMU() async throws {
        let vm = try ShimHarness(name: "it-reboot", .init(cmdline: "vmshim.action=reboot"))
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker()
        let qemuPID = vm.qemuPIDs()
        try await vm.waitForMarker(count: 2)
        #expect(vm.qemuPIDs() == qemuPID)
        #expect(vm.state() == "running")
        #expect(try vm.cli(["destroy", "it-reboot"]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
        #expect(vm.qemuPIDs().isEmpty)
    }

    @Test func onRebootDestroyEndsTheShim() async throws {
        let vm = try ShimHarness(name: "it-noreboot", .init(cmdline: "vmshim.action=reboot", onReboot: "destroy"))
        defer { vm.tearDown() }
        try vm.start()
        #expect(await vm.waitForExit(timeout: .seconds(90)) == 0, "\(vm.output)")
        #expect(vm.markerCount == 1)
        #expect(vm.output.contains("on_reboot is destroy"))
    }

    @Test func onPoweroffRestartBootsAgain() async throws {
        let vm = try ShimHarness(name: "it-restart", .init(cmdline: "vmshim.action=poweroff", onPoweroff: "restart"))
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker(count: 2)
        #expect(vm.state() == "running")
        #expect(try vm.cli(["destroy", "it-restart"]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
    }

    /// Kill -9 the shim mid-run, start it again: the same QEMU, the guest
    /// never stopped (its counter keeps counting, it did not boot again).
    @Test func reattachesAfterTheShimIsKilled() async throws {
        let vm = try ShimHarness(name: "it-reattach", .init(cmdline: "vmshim.counter"))
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker()
        let before = try vm.status()
        let qemuPID = try #require(before["qemuPid"]?.int64Value)
        vm.signalShim(SIGKILL)
        _ = await vm.waitForExit(timeout: .seconds(10))
        #expect(vm.qemuPIDs() == [Int32(qemuPID)], "QEMU must survive its shim")
        let counterLines = vm.serial.components(separatedBy: "vmshim-counter").count

        try vm.start()
        try await vm.waitFor("reattach") { (try? vm.status())?["reattached"]?.boolValue == true }
        let after = try vm.status()
        #expect(after["qemuPid"]?.int64Value == qemuPID)
        #expect(after["shimPid"]?.int64Value == Int64(vm.shimPID))
        #expect(after["state"]?.stringValue == "running")
        try await vm.waitFor("the counter to advance") { vm.serial.components(separatedBy: "vmshim-counter").count > counterLines + 1 }
        #expect(vm.markerCount == 1, "the guest booted again")

        // The new shim still notices QEMU's end through the pidfd.
        kill(Int32(qemuPID), SIGKILL)
        #expect(await vm.waitForExit(timeout: .seconds(30)) != 0)
        #expect(!FileIO.exists(vm.runDirectory))
    }

    @Test func aSecondShimForTheSameDomainIsRefused() async throws {
        let vm = try ShimHarness(name: "it-twice")
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let second = Process()
        second.executableURL = URL(fileURLWithPath: ShimHarness.binary)
        second.arguments = ["run", "--run-root", vm.runRoot, vm.xmlPath]
        let errors = Pipe()
        second.standardError = errors
        second.standardOutput = FileHandle.nullDevice
        try second.run()
        second.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(second.terminationStatus == 1)
        #expect(message.contains("already supervised"))
        #expect(vm.qemuPIDs().count == 1)
        #expect(vm.state() == "paused")
        // --paused: the vCPUs never ran; resume starts the guest.
        #expect(vm.markerCount == 0)
        #expect(try vm.cli(["resume", "it-twice"]).status == 0)
        try await vm.waitForMarker()
        #expect(try vm.cli(["destroy", "it-twice"]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)
    }

    /// QEMU's own words reach the user, and nothing is left behind.
    @Test func aQEMUThatRefusesToStartLeavesNothing() async throws {
        let vm = try ShimHarness(name: "it-refused", .init(machine: "pc-i440fx-0.0"))
        defer { vm.tearDown() }
        try vm.start()
        #expect(await vm.waitForExit(timeout: .seconds(30)) == ShimOutcome.Code.startFailed)
        #expect(vm.output.contains("unsupported machine type"), "\(vm.output)")
        #expect(vm.qemuPIDs().isEmpty)
        #expect(!FileIO.exists(vm.runDirectory))
    }

    /// A disk and a serial path with ",file=" in them reach QEMU as literal
    /// paths: QEMU opens exactly those files.
    @Test func commaPathsReachQEMULiterally() async throws {
        let scratch = try Fixtures.scratchDirectory("inj")
        let trap = scratch + "/a,file=/etc"
        try FileManager.default.createDirectory(atPath: trap, withIntermediateDirectories: true)
        defer { FileIO.removeTree(scratch) }
        let disk = trap + "/shadow.img"
        _ = FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20))
        let vm = try ShimHarness(
            name: "it-inject",
            .init(extraDevices: """
                <disk type='file' device='disk'>
                  <driver name='qemu' type='raw'/>
                  <source file='\(disk)'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <serial type='unix'>
                  <source mode='bind' path='\(scratch)/s,server=off.sock'/>
                  <target port='1'/>
                </serial>
                """))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let reply = try vm.cli(["qmp", "it-inject", #"{"execute":"query-block"}"#])
        #expect(reply.status == 0)
        let devices = try JSONValue.parse(reply.out)["return"]?.arrayValue ?? []
        let files = devices.compactMap { $0["inserted"]?["file"]?.stringValue }
        #expect(files.contains(disk), "\(reply.out)")
        #expect(UnixSocket.isListening(path: scratch + "/s,server=off.sock"))
        #expect(try vm.cli(["destroy", "it-inject"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// A qcow2 overlay reaches QEMU with its whole backing chain, and an
    /// optional disk whose image is missing is left out, as under libvirt.
    @Test func backingChainsAndOptionalDisks() async throws {
        let scratch = try Fixtures.scratchDirectory("chain-it")
        defer { FileIO.removeTree(scratch) }
        let base = scratch + "/base.raw", top = scratch + "/top.qcow2"
        _ = FileManager.default.createFile(atPath: base, contents: Data(count: 1 << 20))
        // A relative backing name, resolved against the overlay's directory.
        #expect(try Fixtures.qemuImg(["create", "-q", "-f", "qcow2", "-o", "backing_file=base.raw,backing_fmt=raw", top], in: scratch) == 0)
        let vm = try ShimHarness(
            name: "it-chain",
            .init(extraDevices: """
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='\(top)'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='raw'/>
                  <source file='\(scratch)/missing.raw' startupPolicy='optional'/>
                  <target dev='vdb' bus='virtio'/>
                </disk>
                """))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let reply = try vm.cli(["qmp", "it-chain", #"{"execute":"query-block"}"#])
        #expect(reply.status == 0)
        let devices = try JSONValue.parse(reply.out)["return"]?.arrayValue ?? []
        // With an explicit chain QEMU names the top by a json: filename that holds both files.
        let inserted = devices.compactMap { $0["inserted"] }
        let vda = inserted.first { $0["backing_file"]?.stringValue == base }
        #expect(vda?["backing_file_depth"]?.int64Value == 1, "\(reply.out.prefix(2000))")
        #expect(vda?["file"]?.stringValue?.contains(top) == true)
        #expect(inserted.count == 1)
        #expect(!reply.out.contains("missing.raw"))
        let live = try vm.cli(["status", "it-chain", "--xml"]).out
        #expect(live.contains(base) && !live.contains("missing.raw"), "\(live)")
        #expect(vm.output.contains("disk 'vdb' is left out of the guest"), "\(vm.output)")
        #expect(try vm.cli(["destroy", "it-chain"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// As a container's main process (PID 1 of its PID namespace) the shim
    /// reaps the orphans re-parented to it and still turns SIGTERM into a
    /// graceful guest shutdown.
    @Test func asAContainersInitItReapsOrphansAndShutsDownOnSIGTERM() async throws {
        let vm = try ShimHarness(name: "it-pid1")
        defer { vm.tearDown() }
        try vm.start(launcher: ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc"])
        try await vm.waitForMarker()
        let shim = try #require(ProcTable.children(of: vm.shimPID).first?.pid)
        #expect(try FileIO.readString("/proc/\(shim)/status").contains("NSpid:\t\(shim)\t1\n"))

        // An orphan inside the namespace: its parent exits at once, so it is re-parented to the shim.
        let orphanMaker = Process()
        orphanMaker.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        orphanMaker.arguments = ["-t", String(shim), "-p", "-m", "--", "/bin/sh", "-c", "sleep 0.5 & exit 0"]
        try orphanMaker.run()
        orphanMaker.waitUntilExit()
        #expect(ProcTable.children(of: shim).contains { $0.command == "sleep" })
        try await vm.waitFor("the orphan to be reaped", timeout: .seconds(10)) {
            !ProcTable.children(of: shim).contains { $0.command == "sleep" }
        }
        #expect(!ProcTable.children(of: shim).contains { $0.state == "Z" })

        kill(shim, SIGTERM)
        #expect(await vm.waitForExit(timeout: .seconds(60)) == 0)
        #expect(vm.output.contains("was shut down on request"), "\(vm.output)")
    }

    /// A simulated pod: a cgroup made for it, then new mount, net, pid, uts
    /// and ipc namespaces with vmshim as their PID 1. QEMU shares every one
    /// of the shim's namespaces, and sits in the pod's cgroup
    /// (register='none') or in its own child of it (the default).
    @Test(arguments: [false, true]) func insideASimulatedPodQEMUSharesTheNamespacesAndTheCgroup(registerNone: Bool) async throws {
        let name = registerNone ? "it-pod-none" : "it-pod"
        var options = ShimHarness.Options()
        if registerNone { options.extraTopLevel = "<resource register='none'/>" }
        let vm = try ShimHarness(name: name, options)
        defer { vm.tearDown() }
        let host = try Cgroups.host()
        let pod = "vmshim-test-pod-\(getpid())-\(name)"
        var podDirectories: [String] = []
        defer {
            for directory in podDirectories.reversed() {
                _ = Cgroups.remove(Cgroups.Placement(directories: [directory + "/" + Cgroups.leafName(domain: name)]))
                _ = Cgroups.remove(Cgroups.Placement(directories: [directory]))
            }
        }
        for hierarchy in host.hierarchies {
            let directory = hierarchy.shimDirectory + "/" + pod
            try CgroupFS.host.makeDirectory(directory)
            podDirectories.append(directory)
            if hierarchy.controllers.contains("cpuset") {
                for knob in ["cpuset.cpus", "cpuset.mems"] {
                    try CgroupFS.host.write(directory + "/" + knob, try FileIO.readString(hierarchy.shimDirectory + "/" + knob).trimmingWhitespace())
                }
            }
        }
        // What a container runtime does: join the pod's cgroup, then the pod's namespaces.
        let join = podDirectories.map { "echo $$ > '\($0)/cgroup.procs'" }.joined(separator: " && ")
        try vm.start(launcher: [
            "/bin/sh", "-c", "\(join) && exec /usr/bin/unshare --mount --net --pid --uts --ipc --fork --mount-proc \"$@\"", "pod",
        ])
        try await vm.waitForMarker()
        let shim = try #require(ProcTable.children(of: vm.shimPID).first?.pid)
        let qemu = try #require(vm.qemuPIDs().first)
        func namespace(_ pid: Int32, _ kind: String) -> String {
            var buffer = [CChar](repeating: 0, count: 256)
            let count = readlink("/proc/\(pid)/ns/\(kind)", &buffer, buffer.count - 1)
            return count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
        for kind in ["mnt", "net", "pid", "ipc", "uts", "user", "cgroup"] {
            #expect(namespace(qemu, kind) == namespace(shim, kind), "\(kind)")
            #expect(namespace(qemu, kind) != "?")
        }
        for kind in ["mnt", "net", "pid", "ipc", "uts"] {
            #expect(namespace(shim, kind) != namespace(getpid(), kind), "the pod has its own \(kind) namespace")
        }
        let shimCgroups = try FileIO.readString("/proc/\(shim)/cgroup").split(whereSeparator: \.isNewline)
        let qemuCgroups = try FileIO.readString("/proc/\(qemu)/cgroup").split(whereSeparator: \.isNewline)
        for line in shimCgroups where !line.hasPrefix("0::") {
            #expect(line.hasSuffix("/" + pod), "the shim runs in the pod's cgroup: \(line)")
            #expect(qemuCgroups.contains(registerNone ? line : line + "/" + Cgroups.leafName(domain: name)), "\(line) → \(qemuCgroups)")
        }
        kill(shim, SIGTERM)
        #expect(await vm.waitForExit(timeout: .seconds(60)) == 0)
        for directory in podDirectories {
            #expect(!FileIO.exists(directory + "/" + Cgroups.leafName(domain: name)), "the VM's cgroup goes with the VM")
        }
    }

    /// QEMU runs with no capabilities, cannot gain any, and under its seccomp sandbox.
    @Test func qemuRunsWithoutPrivileges() async throws {
        let vm = try ShimHarness(name: "it-caps")
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let qemu = try #require(vm.qemuPIDs().first)
        let status = try FileIO.readString("/proc/\(qemu)/status")
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(status.contains("\(field):\t0000000000000000\n"), "\(field) in \(status)")
        }
        #expect(status.contains("NoNewPrivs:\t1\n"))
        #expect(status.contains("Seccomp:\t2\n"))
        // The shim itself keeps what it needs (taps need CAP_NET_ADMIN).
        let shim = try FileIO.readString("/proc/\(vm.shimPID)/status")
        #expect(!shim.contains("CapEff:\t0000000000000000\n"))
        #expect(try vm.cli(["resume", "it-caps"]).status == 0)
        try await vm.waitForMarker()
        #expect(try vm.cli(["destroy", "it-caps"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// `--qemu-user`: QEMU runs as that user and its group, with its
    /// supplementary groups only, and still boots (everything the shim
    /// opens for it arrives as file descriptors).
    @Test func qemuRunsAsTheConfiguredUser() async throws {
        let vm = try ShimHarness(name: "it-user")
        defer { vm.tearDown() }
        try vm.start(["--qemu-user", "nobody", "--qemu-group", "nogroup"])
        try await vm.waitForMarker()
        let qemu = try #require(vm.qemuPIDs().first)
        let status = try FileIO.readString("/proc/\(qemu)/status")
        #expect(status.contains("Uid:\t65534\t65534\t65534\t65534\n"), "\(status)")
        #expect(status.contains("Gid:\t65534\t65534\t65534\t65534\n"), "\(status)")
        #expect(status.contains("Groups:\t65534 \n") || status.contains("Groups:\t65534\n"), "root's groups must not leak: \(status)")
        #expect(status.contains("CapEff:\t0000000000000000") && status.contains("CapBnd:\t0000000000000000"))
        #expect(status.contains("NoNewPrivs:\t1"))
        // The shim itself keeps root.
        #expect(try FileIO.readString("/proc/\(vm.shimPID)/status").contains("Uid:\t0\t0\t0\t0"))
        #expect(try vm.cli(["destroy", "it-user"]).status == 0)
        #expect(await vm.waitForExit(timeout: .seconds(30)) == 0)

        let bad = try vm.cli(["run", "--qemu-user", "no-such-user-here", vm.xmlPath])
        #expect(bad.status == 1 && bad.err.contains("--qemu-user: no user named 'no-such-user-here'"), "\(bad.err)")
    }

    /// `<resource register='none'/>`: QEMU stays exactly in the caller's cgroups.
    @Test func registerNoneKeepsQEMUInTheCallersCgroup() async throws {
        var options = ShimHarness.Options()
        options.extraTopLevel = "<resource register='none'/>"
        let vm = try ShimHarness(name: "it-nocg", options)
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let qemu = try #require(vm.qemuPIDs().first)
        let shimCgroups = try FileIO.readString("/proc/\(vm.shimPID)/cgroup")
        #expect(try FileIO.readString("/proc/\(qemu)/cgroup") == shimCgroups)
        #expect(try vm.cli(["status", "it-nocg", "--xml"]).out.contains("register='none'"))
        #expect(try vm.cli(["destroy", "it-nocg"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }
}

/// Processes by parent, from /proc.
enum ProcTable {
    struct Entry { var pid: Int32; var command: String; var state: String }

    static func children(of parent: Int32) -> [Entry] {
        FileIO.listDirectory("/proc").compactMap { name -> Entry? in
            guard let pid = Int32(name), let stat = try? FileIO.readString("/proc/\(pid)/stat"),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == parent else { return nil }
            return Entry(pid: pid, command: String(stat[stat.index(after: open)..<close]), state: String(fields[0]))
        }
    }
}
