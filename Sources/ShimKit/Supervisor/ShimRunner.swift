import Logging
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// `vmshim run`: one VM in the foreground, from start to exit code.
///
/// Composes the supervisor, the control server and signal handling:
/// SIGTERM/SIGINT ask the guest to shut down (ACPI, then quit after the
/// shutdown timeout); a second one destroys it. The shim's exit code says how
/// the VM ended (docs/cli.md).
public enum ShimRunner {
    /// `xml` and `spec` may come from the caller's own read of the file
    /// (it needed the domain's name), so it is read and parsed once.
    public static func run(
        config: ShimConfiguration, xml: String? = nil, spec: DomainSpec? = nil, logLevel: Logger.Level = .info
    ) async -> Int32 {
        let name = config.runDirectory.name
        let logger = Logger(label: "vmshim[\(name)]") { ShimLogHandler(label: $0, level: logLevel) }
        func fail(_ error: any Error) -> Int32 {
            logger.error("\((error as? ShimError)?.message ?? "\(error)")")
            return ShimOutcome.Code.startFailed
        }

        let text: String
        do {
            text = try xml ?? FileIO.readString(config.xmlPath)
        } catch {
            return fail(ShimError(.invalidArgument, "cannot read \(config.xmlPath): \(error)"))
        }
        let supervisor: VMSupervisor
        do {
            supervisor = try VMSupervisor(config: config, xml: text, spec: spec, logger: logger)
        } catch {
            return fail(error)
        }
        // A restore's pump writes into a pipe QEMU may close: EPIPE, not death.
        signal(SIGPIPE, SIG_IGN)
        // Watch signals before anything starts, so none is lost.
        let signals = SignalWatcher([SIGTERM, SIGINT, SIGHUP])
        // As a container's main process, collect the container's orphans.
        let reaper = OrphanReaper.startIfInit()
        defer { withExtendedLifetime(reaper) {} }

        do {
            try await supervisor.claimRunDirectory()
        } catch {
            return fail(error)
        }
        // The control socket is bound now, so clients can connect at once;
        // the gRPC server starts serving once the VM has started. Its
        // start-up would otherwise compete with QEMU's for the CPU (measured:
        // about 3 ms of every start), and a call made meanwhile waits in the
        // socket's backlog as it would wait for the start anyway.
        let servers: [ControlServer]
        do {
            servers = [
                try ControlServer(
                    supervisor: supervisor, path: config.runDirectory.controlSocket, group: EventLoops.shared,
                    socketGroup: config.socketGroup),
                try ControlServer(
                    supervisor: supervisor, path: config.runDirectory.readOnlyControlSocket, group: EventLoops.shared,
                    readOnly: true),
            ]
        } catch {
            await supervisor.cleanUp()
            return fail(error)
        }
        // Registered before QEMU starts, so a second live shim for the same
        // UUID (in another pod or run root) is refused before it can start a
        // second QEMU on the same disks.
        var registration: RegistrationClient?
        if let target = config.registrar {
            let client = RegistrationClient(
                socketPath: target.socketPath, supervisor: supervisor, runDirectory: config.runDirectory,
                version: config.version, logger: logger)
            client.start()
            switch await client.firstVerdict(timeout: .seconds(2)) {
            case .refused(let error):
                await client.finish(ShimOutcome(exitCode: 1, state: .shutoff, reason: "refused", message: ""))
                for server in servers { server.stop() }
                await supervisor.cleanUp()
                return fail(error)
            case .unavailable(let why):
                if target.explicit {
                    logger.warning("not registered: \(why); running unregistered and retrying in the background")
                }
            case .registered, .pending:
                break
            }
            registration = client
        }
        do {
            try await supervisor.start()
        } catch {
            await registration?.finish(
                ShimOutcome(exitCode: 1, state: .shutoff, reason: "failed", message: (error as? ShimError)?.message ?? "\(error)"))
            await supervisor.cleanUp()
            return fail(error)
        }
        let serving = Task {
            await withTaskGroup(of: Void.self) { group in
                for server in servers {
                    group.addTask {
                        do {
                            try await server.serve()
                        } catch {
                            logger.error("control API on \(server.path) stopped: \(error)")
                        }
                    }
                }
            }
        }
        let status = await supervisor.status
        logger.info(
            "domain '\(status.name)' \(status.reattached ? "reattached" : "started") (uuid \(status.uuid), QEMU pid \(status.qemuPID)), \(status.state.rawValue); control socket \(status.controlSocket)")
        for device in status.charDevices {
            logger.info("\(device.alias): \(device.path)")
        }

        let signalTask = Task {
            var received = 0
            for await number in signals.signals {
                if number == SIGHUP { continue }  // a closed terminal must not stop the guest
                received += 1
                if received == 1 {
                    logger.notice("signal \(signalName(number)): shutting the guest down (timeout \(config.shutdownTimeout.shortDescription))")
                    Task {
                        do {
                            try await supervisor.shutdown(timeout: config.shutdownTimeout, forceAfterTimeout: true)
                        } catch {
                            logger.warning("graceful shutdown failed: \(error); destroying")
                            try? await supervisor.destroy()
                        }
                    }
                } else {
                    logger.notice("signal \(signalName(number)) again: destroying the guest")
                    Task { try? await supervisor.destroy() }
                }
            }
        }

        let outcome = await supervisor.waitForEnd()
        signalTask.cancel()
        await registration?.finish(outcome)
        // Let in-flight control calls (e.g. the Shutdown that ended the VM) answer.
        for server in servers { server.stop() }
        _ = try? await withThrowingTimeout(.seconds(5), "stopping the control API") { await serving.value }
        await supervisor.cleanUp()
        if outcome.exitCode == 0 {
            logger.info("\(outcome.message)")
        } else {
            logger.error("\(outcome.message)")
        }
        return outcome.exitCode
    }
}
