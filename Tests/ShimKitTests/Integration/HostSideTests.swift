import Foundation
import Testing
@testable import ShimKit

/// Host-side effects of the domain XML that the guest does not see, with
/// real QEMU: the interface script libvirt runs on a tap, and vCPU affinity.
@Suite(.serialized) struct HostSideEffects {
    /// The script runs with the tap's name once the tap exists; a failing
    /// script fails the start and leaves no QEMU, tap or run directory behind.
    @Test func interfaceScriptsRunOnTheTapAndAFailureStopsTheStart() async throws {
        let scratch = try Fixtures.scratchDirectory("ifscript")
        defer { FileIO.removeTree(scratch) }
        let record = scratch + "/ran"
        let good = scratch + "/ifup-ok", bad = scratch + "/ifup-bad"
        try "#!/bin/sh\necho \"$1 $(cat /sys/class/net/$1/operstate 2>/dev/null)\" > \(record)\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        try "#!/bin/sh\necho 'no bridge for' \"$1\" >&2\nexit 3\n".write(toFile: bad, atomically: true, encoding: .utf8)
        chmod(good, 0o755)
        chmod(bad, 0o755)
        func nic(_ script: String, tap: String) -> String {
            "<interface type='ethernet'><target dev='\(tap)'/><model type='virtio'/><script path='\(script)'/></interface>"
        }

        let vm = try ShimHarness(name: "it-ifscript", .init(extraDevices: nic(good, tap: "vmshimtst0")))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let ran = try String(contentsOfFile: record, encoding: .utf8)
        #expect(ran.hasPrefix("vmshimtst0 "), "\(ran)")
        #expect(try vm.cli(["destroy", "it-ifscript"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))

        let failing = try ShimHarness(name: "it-ifscript-bad", .init(extraDevices: nic(bad, tap: "vmshimtst1")))
        defer { failing.tearDown() }
        try failing.start(["--paused"])
        #expect(await failing.waitForExit(timeout: .seconds(30)) == ShimOutcome.Code.startFailed)
        #expect(failing.output.contains("'\(bad) vmshimtst1' failed (exit status 3)"), "\(failing.output)")
        #expect(failing.qemuPIDs().isEmpty)
        #expect(!FileIO.exists("/sys/class/net/vmshimtst1"))
        #expect(!FileIO.exists(failing.runDirectory))
    }

    /// `<cpu mode='host-model'>` is decided at start from what the installed
    /// QEMU reports (the probe is the real one, its files gone afterwards),
    /// QEMU runs the named model with the listed features and the XML's own
    /// override, and the live XML shows the custom CPU it became.
    @Test func hostModelIsDecidedFromTheInstalledQEMU() async throws {
        let scratch = try Fixtures.scratchDirectory("cpuprobe")
        defer { FileIO.removeTree(scratch) }
        let report = try await QEMUCPUProbe.report(emulator: "/usr/bin/qemu-system-x86_64", accelerator: .qemu, directory: scratch)
        #expect(FileIO.listDirectory(scratch).isEmpty)
        // The unit tests' recording is this QEMU's answer; re-record it when QEMU changes.
        #expect(report == (try HostCPUModelTests.recordedReport()))
        let expansion = try HostCPUModel.expand(report)

        let vm = try ShimHarness(
            name: "it-hostmodel",
            .init(extraTopLevel: "<cpu mode='host-model'><model fallback='allow'/><feature policy='disable' name='la57'/></cpu>"))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let pid = try #require(vm.qemuPIDs().first)
        let argv = try FileIO.readString("/proc/\(pid)/cmdline").split(separator: "\0").map(String.init)
        let cpu = try #require(argv.firstIndex(of: "-cpu").map { argv[$0 + 1] })
        #expect(cpu.hasPrefix(expansion.model + ","), "\(cpu)")
        #expect(cpu.contains(",la57=off"), "\(cpu)")
        #expect(!cpu.contains("la57=on"), "\(cpu)")
        let live = try StatusFile.read(from: vm.runDirectory + "/status.json").liveXML
        #expect(live.contains("<model fallback='forbid'>\(expansion.model)</model>"), "\(live)")
        #expect(!FileIO.listDirectory(vm.runDirectory).contains { $0.hasPrefix("cpu-probe") })
        #expect(try vm.cli(["destroy", "it-hostmodel"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// `<interface type='network'>` on a real libvirt network (an isolated
    /// one this test creates): the shim takes a port from libvirt's network
    /// service, joins its tap to the network's bridge and shows the port in
    /// the live XML; a shim that reattaches after kill -9 gives the port
    /// back when the VM ends; a port a dead run left behind is deleted at
    /// the next start; a missing or inactive network stops the start with
    /// nothing left over.
    @Test func networkInterfacesTakeAndGiveBackLibvirtPorts() async throws {
        let network = "vmshim-it-net", bridge = "vmshimitn0"
        let scratch = try Fixtures.scratchDirectory("itnet")
        defer { FileIO.removeTree(scratch) }
        try "<network><name>\(network)</name><bridge name='\(bridge)'/></network>"
            .write(toFile: scratch + "/net.xml", atomically: true, encoding: .utf8)
        _ = try Self.virsh(["net-destroy", network])
        #expect(try Self.virsh(["net-create", scratch + "/net.xml"]).status == 0, "libvirtd must run: scripts/start-libvirt.sh")
        defer { _ = try? Self.virsh(["net-destroy", network]) }
        func ports() throws -> [String] {
            try Self.virsh(["net-port-list", network, "--uuid"]).out.split(separator: "\n").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
        }
        let nic = "<interface type='network'><source network='\(network)'/><model type='virtio'/></interface>"

        let vm = try ShimHarness(name: "it-network", .init(extraDevices: nic))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let held = try ports()
        #expect(held.count == 1)
        let port = try #require(held.first)
        let owner = try Self.virsh(["net-port-dumpxml", network, port]).out
        #expect(owner.contains("<name>it-network</name>"), "\(owner)")
        let live = try StatusFile.read(from: vm.runDirectory + "/status.json").liveXML
        #expect(live.contains("portid='\(port)'") && live.contains("bridge='\(bridge)'"), "\(live)")
        let taps = FileIO.listDirectory("/sys/class/net/\(bridge)/brif")
        #expect(taps.count == 1, "the tap joined the network's bridge")

        // kill -9 the shim; the new one reattaches and gives the port back at the end.
        vm.signalShim(SIGKILL)
        _ = await vm.waitForExit(timeout: .seconds(10))
        try vm.start()
        try await vm.waitFor("reattach") { (try? vm.status())?["reattached"]?.boolValue == true }
        #expect(try ports() == [port])
        #expect(try vm.cli(["destroy", "it-network"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
        #expect(try ports().isEmpty)

        // Shim and QEMU both killed: the next start deletes the dead run's port.
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let stale = try ports()
        vm.signalShim(SIGKILL)
        _ = await vm.waitForExit(timeout: .seconds(10))
        for pid in vm.qemuPIDs() { kill(pid, SIGKILL) }
        try await vm.waitFor("QEMU to die") { vm.qemuPIDs().isEmpty }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let fresh = try ports()
        #expect(fresh.count == 1 && Set(fresh).isDisjoint(with: stale), "stale \(stale), now \(fresh)")
        #expect(try vm.cli(["destroy", "it-network"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
        #expect(try ports().isEmpty)

        // A network that is not there, then one that is not active.
        for (name, fragment) in [("vmshim-it-nonet", "does not exist"), ("vmshim-it-down", "not active")] {
            if name == "vmshim-it-down" {
                try "<network><name>\(name)</name><bridge name='vmshimitn1'/></network>".write(toFile: scratch + "/down.xml", atomically: true, encoding: .utf8)
                #expect(try Self.virsh(["net-define", scratch + "/down.xml"]).status == 0)
            }
            defer { if name == "vmshim-it-down" { _ = try? Self.virsh(["net-undefine", name]) } }
            let failing = try ShimHarness(
                name: "it-nonet", .init(extraDevices: "<interface type='network'><source network='\(name)'/></interface>"))
            defer { failing.tearDown() }
            try failing.start(["--paused"])
            #expect(await failing.waitForExit(timeout: .seconds(30)) == ShimOutcome.Code.startFailed)
            #expect(failing.output.contains("network '\(name)'") && failing.output.contains(fragment), "\(failing.output)")
            #expect(failing.qemuPIDs().isEmpty)
            #expect(!FileIO.exists(failing.runDirectory))
        }
    }

    /// `<interface type='direct'>`: a macvtap on the host device (here a
    /// bridge this test makes) with the guest's MAC, deleted when the VM
    /// ends, and deleted at the next start when shim and QEMU both died.
    @Test func directInterfacesGetAMacvtapThatGoesWithTheVM() async throws {
        let lower = "vmshimitlow0"
        _ = try? Self.run("/usr/sbin/ip", ["link", "del", lower])
        #expect(try Self.run("/usr/sbin/ip", ["link", "add", lower, "type", "bridge"]) == 0)
        defer { _ = try? Self.run("/usr/sbin/ip", ["link", "del", lower]) }
        func macvtaps() -> [String] {
            FileIO.listDirectory("/sys/class/net/\(lower)").filter { $0.hasPrefix("upper_") }.map { String($0.dropFirst("upper_".count)) }
        }
        let nic = "<interface type='direct'><mac address='52:54:00:7a:00:01'/><source dev='\(lower)' mode='bridge'/><model type='virtio'/></interface>"
        let vm = try ShimHarness(name: "it-direct", .init(extraDevices: nic))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let links = macvtaps()
        #expect(links.count == 1)
        let link = try #require(links.first)
        #expect((try? FileIO.readString("/sys/class/net/\(link)/address"))?.trimmingWhitespace() == "52:54:00:7a:00:01")
        let live = try StatusFile.read(from: vm.runDirectory + "/status.json").liveXML
        #expect(live.contains("<target dev='\(link)'/>"), "\(live)")
        #expect(try vm.cli(["destroy", "it-direct"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
        #expect(macvtaps().isEmpty)

        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        vm.signalShim(SIGKILL)
        _ = await vm.waitForExit(timeout: .seconds(10))
        for pid in vm.qemuPIDs() { kill(pid, SIGKILL) }
        try await vm.waitFor("QEMU to die") { vm.qemuPIDs().isEmpty }
        let stale = try #require(macvtaps().first, "a macvtap outlives QEMU")
        let staleIndex = try FileIO.readString("/sys/class/net/\(stale)/ifindex")
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let fresh = macvtaps()
        #expect(fresh.count == 1, "the dead run's link went, the new one is there")
        #expect(fresh.first.flatMap { try? FileIO.readString("/sys/class/net/\($0)/ifindex") } != staleIndex)
        #expect(try vm.cli(["destroy", "it-direct"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
        #expect(macvtaps().isEmpty)
    }

    static func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    static func virsh(_ arguments: [String]) throws -> (status: Int32, out: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/virsh")
        process.arguments = ["-q", "-c", "qemu:///system"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `<vcpu cpuset>` is QEMU's affinity, in every thread, as libvirt pins it.
    @Test func cpusetBecomesQEMUsAffinity() async throws {
        let vm = try ShimHarness(name: "it-cpuset", .init(vcpuCpuset: "0"))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let pid = try #require(vm.qemuPIDs().first)
        let threads = FileIO.listDirectory("/proc/\(pid)/task")
        #expect(!threads.isEmpty)
        for tid in threads {
            let status = (try? FileIO.readString("/proc/\(pid)/task/\(tid)/status")) ?? ""
            #expect(status.contains("Cpus_allowed_list:\t0\n"), "thread \(tid): \(status)")
        }
        #expect(try vm.cli(["destroy", "it-cpuset"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// `<cputune>` pins as libvirt pins them: the emulator's threads on
    /// `<emulatorpin>`, the vCPU thread on its `<vcpupin>`.
    @Test func vcpuAndEmulatorPinsReachQEMUsThreads() async throws {
        let vm = try ShimHarness(
            name: "it-vcpupin", .init(extraTopLevel: "<cputune><vcpupin vcpu='0' cpuset='1'/><emulatorpin cpuset='0'/></cputune>"))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let pid = try #require(vm.qemuPIDs().first)
        func allowed(_ tid: String) -> String {
            let status = (try? FileIO.readString("/proc/\(pid)/task/\(tid)/status")) ?? ""
            return status.components(separatedBy: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?
                .dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces) ?? ""
        }
        let threads = FileIO.listDirectory("/proc/\(pid)/task")
        let vcpu = threads.first { ((try? FileIO.readString("/proc/\(pid)/task/\($0)/comm")) ?? "").hasPrefix("CPU 0/") }
        #expect(allowed(try #require(vcpu)) == "1")
        #expect(allowed("\(pid)") == "0", "the emulator's main thread")
        #expect(try vm.cli(["destroy", "it-vcpupin"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
    }

    /// `<os firmware='efi'>` boots the test guest through OVMF (Debian's
    /// ovmf), and the variable store is made from the template in the NVRAM
    /// directory, then kept across starts.
    @Test func uefiBootsTheGuestAndKeepsItsVariableStore() async throws {
        var options = ShimHarness.Options(machine: "q35")
        options.osAttributes = " firmware='efi'"
        options.osExtra = "<firmware><feature enabled='no' name='secure-boot'/></firmware>"
        options.memoryMiB = 256  // OVMF's 4 MiB build does not start in 128
        let vm = try ShimHarness(name: "it-uefi", options)
        defer { vm.tearDown() }
        try vm.start()
        try await vm.waitForMarker(timeout: .seconds(120))
        let store = vm.runRoot + "/nvram/it-uefi_VARS.fd"
        #expect(FileIO.size(store) == FileIO.size("/usr/share/OVMF/OVMF_VARS_4M.fd"))
        let blocks = try vm.cli(["qmp", "it-uefi", #"{"execute":"query-block"}"#])
        #expect(blocks.out.contains("OVMF_CODE_4M.fd") && blocks.out.contains(store), "\(blocks.out)")
        #expect(try vm.cli(["destroy", "it-uefi"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
        #expect(FileIO.exists(store), "the store outlives the VM")
    }

    /// `type='bridge'`: the shim creates the tap, gives it the bridge's MTU
    /// and enslaves it, as libvirt does; a missing bridge stops the start.
    @Test func bridgeInterfacesJoinTheirBridge() async throws {
        let bridge = "vmshimtstbr0"
        func ip(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = arguments
            try process.run()
            process.waitUntilExit()
        }
        try? ip(["link", "del", bridge])
        try ip(["link", "add", bridge, "type", "bridge"])
        try ip(["link", "set", bridge, "mtu", "1450"])
        defer { try? ip(["link", "del", bridge]) }
        let vm = try ShimHarness(name: "it-bridge", .init(extraDevices: """
            <interface type='bridge'><source bridge='\(bridge)'/><target dev='vmshimtst2'/><model type='virtio'/></interface>
            <interface type='bridge'><source bridge='\(bridge)'/><target dev='vmshimtst3'/><model type='virtio'/><driver queues='2'/></interface>
            """))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let master = try FileManager.default.destinationOfSymbolicLink(atPath: "/sys/class/net/vmshimtst2/master")
        #expect(master.hasSuffix("/" + bridge))
        #expect(try FileIO.readString("/sys/class/net/vmshimtst2/mtu").trimmingCharacters(in: .whitespacesAndNewlines) == "1450")
        // The multiqueue NIC: a tap with IFF_MULTI_QUEUE, one fd per queue in QEMU.
        let flags = try FileIO.readString("/sys/class/net/vmshimtst3/tun_flags").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect((Int(flags.dropFirst(2), radix: 16) ?? 0) & 0x100 != 0, "tun_flags \(flags)")
        let qemu = try #require(vm.qemuPIDs().first)
        let tunFDs = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(qemu)/fd").filter {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(qemu)/fd/\($0)")) == "/dev/net/tun"
        }
        #expect(tunFDs.count == 3, "one fd for vmshimtst2, two queues for vmshimtst3")
        #expect(try vm.cli(["destroy", "it-bridge"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))

        let missing = try ShimHarness(name: "it-nobridge", .init(extraDevices: """
            <interface type='bridge'><source bridge='vmshimnone0'/><model type='virtio'/></interface>
            """))
        defer { missing.tearDown() }
        try missing.start(["--paused"])
        #expect(await missing.waitForExit(timeout: .seconds(30)) == ShimOutcome.Code.startFailed)
        #expect(missing.output.contains("bridge 'vmshimnone0'"), "\(missing.output)")
        #expect(missing.qemuPIDs().isEmpty)
    }

    /// `<hugepages/>`: QEMU maps the guest RAM from the hugetlbfs mount of
    /// the default page size, preallocated, from a directory of the domain's
    /// own that goes away with the VM; too few free pages stop the start
    /// with a message that says how many are needed.
    @Test func hugepagesBackTheGuestRAM() async throws {
        func sh(_ command: String) throws -> Int32 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", command]
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus
        }
        let size = try #require(Hugepages.defaultPageSizeKiB(), "the kernel offers no huge pages")
        var ownMount: String?
        if !Hugepages.mounts().contains(where: { $0.pageSizeKiB == size }) {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("vmshim-huge-\(getpid())").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            #expect(try sh("mount -t hugetlbfs -o pagesize=\(size)k none \(path)") == 0, "mounting hugetlbfs needs root")
            ownMount = path
        }
        defer { if let ownMount { _ = try? sh("umount \(ownMount); rmdir \(ownMount)") } }
        let mount = try #require(Hugepages.mounts().first { $0.pageSizeKiB == size })
        let nrPath = "/sys/kernel/mm/hugepages/hugepages-\(size)kB/nr_hugepages"
        let before = try #require(UInt64(try FileIO.readString(nrPath).trimmingWhitespace()))
        defer { _ = try? sh("echo \(before) > \(nrPath)") }

        let guestPages = UInt64(128 * 1024) / size
        let free = Hugepages.freePages(sizeKiB: size) ?? 0
        // First too few pages, then enough.
        if free >= guestPages { #expect(try sh("echo \(before - (free - guestPages) - 1) > \(nrPath)") == 0) }
        let starved = try ShimHarness(name: "it-hugestarved", .init(extraTopLevel: "<memoryBacking><hugepages/></memoryBacking>"))
        defer { starved.tearDown() }
        try starved.start(["--paused"])
        #expect(await starved.waitForExit(timeout: .seconds(30)) == ShimOutcome.Code.startFailed)
        #expect(starved.output.contains("free \(size) KiB huge pages"), "\(starved.output)")
        #expect(starved.qemuPIDs().isEmpty)

        #expect(try sh("echo \(before + guestPages + 8) > \(nrPath)") == 0)
        let vm = try ShimHarness(name: "it-huge", .init(extraTopLevel: "<memoryBacking><hugepages/></memoryBacking>"))
        defer { vm.tearDown() }
        try vm.start(["--paused"])
        try await vm.waitForState("paused")
        let directory = mount.path + "/vmshim/it-huge"
        #expect(FileManager.default.fileExists(atPath: directory))
        // Preallocated: the guest's pages are taken before it runs.
        let freeNow = Hugepages.freePages(sizeKiB: size) ?? 0
        #expect(freeNow <= before + 8, "free \(freeNow) of \(before + guestPages + 8)")
        #expect(try vm.cli(["destroy", "it-huge"]).status == 0)
        _ = await vm.waitForExit(timeout: .seconds(30))
        #expect(!FileManager.default.fileExists(atPath: directory))
    }
}
