import Foundation
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// The registrar end to end: the real vmshim-registrar binary, real shims and
/// real QEMU (TCG, paused guests), killed with SIGKILL the way crashes end them.
@Suite(.serialized) struct RegistrarEndToEnd {
    @Test func domainsSurviveRestartsOfEitherSide() async throws {
        let registrar = try RegistrarHarness()
        var vms: [ShimHarness] = []
        defer {
            for vm in vms { vm.tearDown() }
            registrar.tearDown()
        }
        try await registrar.start()
        for index in 0..<10 {
            let vm = try ShimHarness(name: "reg-\(index)")
            vms.append(vm)
            try vm.start(["--paused"] + registrar.shimArguments)
        }
        let names = Set(vms.map(\.name))
        let first = try await registrar.waitForDomains("10 paused, registered domains", timeout: .seconds(180)) { domains in
            domains.filter { names.contains($0.identity.name) && $0.connected && $0.status.state == .paused && $0.status.qemuPid > 0 }.count == 10
        }
        let qemuPIDs = Dictionary(uniqueKeysWithValues: first.map { ($0.identity.name, $0.status.qemuPid) })
        for vm in vms {
            #expect(vm.qemuPIDs() == [qemuPIDs[vm.name] ?? -1], "\(vm.name): the registrar's QEMU pid is the real one")
        }
        let records = FileIO.listDirectory(registrar.stateDirectory + "/domains").filter { $0.hasSuffix(".json") }
        #expect(records.count == 10, "one durable record per shim: \(records)")
        let accounting = try await registrar.client.hostAccounting()
        #expect(accounting.committedVcpus == 10)
        #expect(accounting.committedMemoryKib == 10 * 128 * 1024)
        #expect(accounting.cpus == UInt32(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #expect(accounting.vcpuOvercommit == Double(10) / Double(accounting.cpus))

        // kill -9 of the registrar: no guest notices; all ten come back.
        registrar.kill9()
        for vm in vms {
            #expect(kill(vm.shimPID, 0) == 0 && kill(qemuPIDs[vm.name] ?? 0, 0) == 0, "\(vm.name) runs on without the registrar")
        }
        try await registrar.start()
        let restarted = ContinuousClock.now
        try await registrar.waitForDomains("all 10 back with unchanged QEMU pids", timeout: .seconds(5)) { domains in
            domains.filter { $0.connected && qemuPIDs[$0.identity.name] == $0.status.qemuPid }.count == 10
        }
        print("registrar restart: 10 shims registered again in \(ContinuousClock.now - restarted)")

        // kill -9 of one shim: its domain turns unreachable with QEMU alive...
        let victim = vms[0]
        let victimPID = qemuPIDs[victim.name] ?? 0
        victim.signalShim(SIGKILL)
        let killed = ContinuousClock.now
        try await registrar.waitForDomains("\(victim.name) unreachable", timeout: .seconds(3)) { domains in
            domains.contains { $0.identity.name == victim.name && !$0.connected && $0.status.state == .unreachable && $0.status.qemuPid == victimPID }
        }
        print("shim kill -9 noticed in \(ContinuousClock.now - killed)")
        #expect(kill(victimPID, 0) == 0, "the guest outlives its shim")
        // ...and a new shim reattaches: same domain, same QEMU, no duplicate.
        _ = await victim.waitForExit(timeout: .seconds(5))
        try victim.start(["--paused"] + registrar.shimArguments)
        let after = try await registrar.waitForDomains("\(victim.name) reattached", timeout: .seconds(60)) { domains in
            domains.contains { $0.identity.name == victim.name && $0.connected && $0.status.state == .paused && $0.status.qemuPid == victimPID && $0.status.reattached }
        }
        #expect(after.filter { $0.identity.name == victim.name }.count == 1)
        #expect(after.count == 10)

        // A second live shim claiming a registered UUID is refused before QEMU starts.
        let duplicate = try ShimHarness(name: "reg-dup")
        vms.append(duplicate)
        try FileIO.readString(vms[1].xmlPath).write(toFile: duplicate.xmlPath, atomically: true, encoding: .utf8)
        try duplicate.start(["--paused"] + registrar.shimArguments)
        #expect(await duplicate.waitForExit(timeout: .seconds(30)) == 1, "\(duplicate.output)")
        #expect(duplicate.output.contains("already registered by the live shim pid \(vms[1].shimPID)"), "\(duplicate.output)")
        #expect(duplicate.qemuPIDs().isEmpty, "the refused shim started no QEMU")
        let held = try await registrar.client.domain(name: vms[1].name)
        #expect(held.connected && held.status.qemuPid == qemuPIDs[vms[1].name])

        // A QEMU that dies is reported with its reason.
        let crashing = vms[2]
        kill(qemuPIDs[crashing.name] ?? 0, SIGKILL)
        let crashed = try await registrar.waitForDomains("\(crashing.name) crashed", timeout: .seconds(10)) { domains in
            domains.contains { $0.identity.name == crashing.name && $0.status.state == .crashed && !$0.connected }
        }
        // The shim's own final word, not the registrar's guess from a dropped connection.
        let status = crashed.first { $0.identity.name == crashing.name }?.status
        #expect(status?.reason == "crashed", "\(String(describing: status))")
        #expect(status?.message.contains("killed by signal 9 (SIGKILL)") == true, "\(String(describing: status))")
        #expect(!FileIO.exists(registrar.stateDirectory + "/domains/\(crashed.first { $0.identity.name == crashing.name }?.identity.uuid ?? "").json"))
        let reportedByShim = await crashing.waitForExit(timeout: .seconds(10))
        #expect(reportedByShim == ShimOutcome.Code.qemuCrashed)

        // A destroyed domain ends with the shim's final state too.
        let destroyed = vms[3]
        let (destroyStatus, _, destroyError) = try destroyed.cli(["destroy", destroyed.name])
        #expect(destroyStatus == 0, "\(destroyError)")
        try await registrar.waitForDomains("\(destroyed.name) shut off", timeout: .seconds(10)) { domains in
            domains.contains {
                $0.identity.name == destroyed.name && $0.status.state == .shutoff && $0.status.reason == "destroyed"
                    && $0.status.message.contains("was destroyed") && !$0.connected
            }
        }
    }

    @Test func knownShimsThatDoNotComeBackTurnUnreachableThenGone() async throws {
        let registrar = try RegistrarHarness()
        let vm = try ShimHarness(name: "reg-gone")
        defer {
            vm.tearDown()
            registrar.tearDown()
        }
        try await registrar.start()
        try vm.start(["--paused"] + registrar.shimArguments)
        let listed = try await registrar.waitForDomains("reg-gone paused", timeout: .seconds(60)) { domains in
            domains.contains { $0.identity.name == "reg-gone" && $0.status.state == .paused && $0.connected }
        }
        let qemuPID = listed.first?.status.qemuPid ?? 0
        // Registrar and shim die together; QEMU lives on without either.
        registrar.kill9()
        vm.signalShim(SIGKILL)
        _ = await vm.waitForExit(timeout: .seconds(5))
        try await registrar.start()
        let domains = try await registrar.client.listDomains()
        #expect(domains.first?.source == "record" && domains.first?.status.state == .paused, "known from the record, waiting")
        // The grace (3 s here) passes without the shim: unreachable, QEMU still named.
        try await registrar.waitForDomains("unreachable after the grace period", timeout: .seconds(10)) { domains in
            domains.contains { $0.identity.name == "reg-gone" && $0.status.state == .unreachable && $0.status.qemuPid == qemuPID }
        }
        // Only once QEMU is gone is the domain gone.
        kill(qemuPID, SIGKILL)
        try await registrar.waitForDomains("gone once QEMU is", timeout: .seconds(10)) { domains in
            domains.contains {
                $0.identity.name == "reg-gone" && $0.status.state == .crashed && $0.status.reason == "gone"
                    && $0.status.message.contains("QEMU pid \(qemuPID) is gone")
            }
        }
        #expect(FileIO.listDirectory(registrar.stateDirectory + "/domains").filter { $0.hasSuffix(".json") }.isEmpty)
        // SIGTERM is a graceful stop (swift-service-lifecycle): exit 0, sockets removed.
        #expect(registrar.stop() == 0, "\(registrar.output)")
        #expect(!FileIO.exists(registrar.socket) && !FileIO.exists(registrar.directory + "/run/registrar-ro.sock"))
    }
}
