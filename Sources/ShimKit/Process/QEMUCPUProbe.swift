#if canImport(Glibc)
import Glibc
#endif

/// Asks an idle QEMU (`-machine none`, nothing to run) what CPU it can give a
/// guest under an accelerator, as libvirt does when it probes capabilities:
/// the static expansion of `max` (TCG) or `host` (KVM) and the named models
/// with what each lacks. Used for `<cpu mode='host-model'>`; about 80 ms,
/// paid only by such guests.
public enum QEMUCPUProbe {
    /// `directory` holds the probe's monitor socket and its log while it runs
    /// (the VM's run directory); both are removed afterwards.
    public static func report(
        emulator: String, accelerator: DomainSpec.VirtType, directory: String, timeout: Duration = .seconds(30)
    ) async throws -> HostCPUReport {
        let socketPath = "\(directory)/cpu-probe.sock"
        let logPath = "\(directory)/cpu-probe.log"
        try UnixSocket.checkPathLength(socketPath)
        let listener = try UnixSocket.listen(path: socketPath)
        defer { FileIO.remove(socketPath) }
        let logFD = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard logFD >= 0 else {
            close(listener)
            throw ShimError.system("cannot create \(logPath) for the CPU probe")
        }
        defer { FileIO.remove(logPath) }
        let accel = accelerator == .kvm ? "kvm" : "tcg"
        let spawned: SpawnedProcess
        do {
            defer {
                close(listener)
                close(logFD)
            }
            spawned = try Spawner.spawn(
                SpawnSpec(
                    executable: emulator,
                    arguments: [
                        emulator, "-machine", "none,accel=\(accel)", "-nodefaults", "-display", "none", "-S",
                        "-chardev", "socket,id=probe,fd=3,server=on,wait=off", "-mon", "chardev=probe,mode=control",
                    ],
                    environment: ["LC_ALL=C"], outputFD: logFD, inheritedFDs: [(listener, 3)], dropPrivileges: true))
        }
        let process = ProcessHandle(spawned)
        do {
            let qmp = try await QMPClient.connect(path: socketPath, timeout: timeout)
            let report: HostCPUReport
            do {
                report = try await query(qmp, accelerator: accelerator, timeout: timeout)
            } catch {
                await qmp.close()
                throw error
            }
            _ = try? await qmp.execute("quit", timeout: .seconds(5))
            await qmp.close()
            if await process.waitForExit(timeout: .seconds(5)) == nil {
                _ = await process.terminate(grace: .seconds(1))
            }
            return report
        } catch {
            _ = await process.terminate(grace: .seconds(1))
            let log = ((try? FileIO.readStringIfPresent(logPath)) ?? nil)?.trimmingWhitespace() ?? ""
            throw ShimError(
                .unavailable,
                "CPU mode 'host-model': cannot ask \(emulator) which CPU it offers under \(accel): \(error)"
                    + (log.isEmpty ? "" : " (QEMU: \(log))"),
                cause: error)
        }
    }

    static func query(_ qmp: QMPClient, accelerator: DomainSpec.VirtType, timeout: Duration) async throws -> HostCPUReport {
        let name = accelerator == .kvm ? "host" : "max"
        let expansion = try await qmp.execute(
            "query-cpu-model-expansion", ["type": "static", "model": ["name": .string(name)]], timeout: timeout)
        let definitions = try await qmp.execute("query-cpu-definitions", timeout: timeout)
        return try decode(expansion: expansion, definitions: definitions)
    }

    /// The report from the two QMP replies (separate, so tests can feed recorded ones).
    static func decode(expansion: JSONValue, definitions: JSONValue) throws -> HostCPUReport {
        guard let properties = expansion["model"]?["props"]?.objectValue else {
            throw ShimError(.internalError, "query-cpu-model-expansion returned no model properties")
        }
        var features: Set<String> = []
        for (key, value) in properties where value.boolValue == true { features.insert(key) }
        func number(_ key: String) -> Int { properties[key]?.int64Value.map { Int($0) } ?? 0 }
        var models: [String: [String]] = [:]
        for definition in definitions.arrayValue ?? [] {
            guard let name = definition["name"]?.stringValue else { continue }
            models[name] = (definition["unavailable-features"]?.arrayValue ?? []).compactMap(\.stringValue)
        }
        return HostCPUReport(
            vendor: properties["vendor"]?.stringValue ?? "", family: number("family"), model: number("model"),
            stepping: number("stepping"), features: features, models: models)
    }
}
