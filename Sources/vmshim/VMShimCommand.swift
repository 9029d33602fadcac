import ArgumentParser
import Logging
import ShimKit

#if canImport(Glibc)
import Glibc
#endif

@main
struct VMShimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmshim",
        abstract: "Run one QEMU guest from a libvirt domain XML, and control it.",
        discussion: """
            'vmshim guest.xml' is short for 'vmshim run guest.xml'. Every command except validate \
            takes --run-root (default /run/vmshim, or $VMSHIM_RUN_ROOT). NAME is a domain name or UUID. \
            Exit codes and the full reference: docs/cli.md.
            """,
        version: VMShimVersion.current,
        subcommands: [
            Run.self, List.self, Status.self, Shutdown.self, Reboot.self, Pause.self, Resume.self, Destroy.self,
            Save.self, QMP.self, Events.self, Validate.self,
        ],
        defaultSubcommand: Run.self
    )

    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let options = RunOptions.fastParse(arguments, subcommands: configuration.subcommands.map { $0._commandName }) {
            do {
                try await options.execute()
            } catch {
                exit(withError: error)
            }
            return
        }
        await main(nil)
    }
}

struct RunRootOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Directory holding the per-VM run directories.", valueName: "dir"))
    var runRoot: String?

    var resolved: String { RunDirectory.resolveRoot(runRoot, environment: environmentDictionary()) }
}

func environmentDictionary() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}

/// Prints a ShimError's message (not Swift's dump of it) and exits 1.
func report(_ error: any Error) -> ExitCode {
    let message = (error as? ShimError)?.message ?? "\(error)"
    printError("vmshim: \(message)")
    return ExitCode(1)
}

func printError(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func seconds(_ value: Double) -> Duration { .milliseconds(Int64(value * 1000)) }

// MARK: - run

/// Everything `vmshim run` needs, whichever parser produced it.
struct RunOptions {
    static let defaultShutdownTimeout = 60.0
    static let defaultQMPTimeout = 30.0
    static let defaultLogLevel = "info"

    var runRoot: String?
    var paused = false
    var shutdownTimeout = defaultShutdownTimeout
    var qmpTimeout = defaultQMPTimeout
    var logDir: String?
    var logLevel = defaultLogLevel
    var saveDir: String?
    var forceBoot = false
    var bypassCache = false
    var socketGroup: String?
    var qemuUser: String?
    var qemuGroup: String?
    var registrar: String?
    var xml = ""

    /// The plain forms of `vmshim [run] [options] guest.xml`, read without
    /// ArgumentParser: building its command model costs about 3 ms of every
    /// guest's start. Anything else (an unknown or malformed option, --help)
    /// returns nil and goes to the full parser, which owns every message.
    static func fastParse(_ arguments: [String], subcommands: [String]) -> RunOptions? {
        var remaining = arguments[...]
        if remaining.first == "run" {
            remaining.removeFirst()
        } else if let first = remaining.first, subcommands.contains(first) || first == "help" {
            return nil
        }
        var options = RunOptions()
        var positional: [String] = []
        while let argument = remaining.popFirst() {
            guard argument.hasPrefix("-") else {
                positional.append(argument)
                continue
            }
            var name = argument
            var value: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                value = String(argument[argument.index(after: equals)...])
            }
            if value == nil, ["--paused", "--force-boot", "--bypass-cache"].contains(name) {
                switch name {
                case "--paused": options.paused = true
                case "--force-boot": options.forceBoot = true
                default: options.bypassCache = true
                }
                continue
            }
            guard let text = value ?? remaining.popFirst() else { return nil }
            switch name {
            case "--run-root": options.runRoot = text
            case "--log-dir": options.logDir = text
            case "--log-level": options.logLevel = text
            case "--save-dir": options.saveDir = text
            case "--socket-group": options.socketGroup = text
            case "--qemu-user": options.qemuUser = text
            case "--qemu-group": options.qemuGroup = text
            case "--registrar": options.registrar = text
            case "--shutdown-timeout":
                guard let number = Double(text) else { return nil }
                options.shutdownTimeout = number
            case "--qmp-timeout":
                guard let number = Double(text) else { return nil }
                options.qmpTimeout = number
            default: return nil
            }
        }
        guard positional.count == 1, (try? options.validate()) != nil else { return nil }
        options.xml = positional[0]
        return options
    }

    func validate() throws {
        guard shutdownTimeout > 0, qmpTimeout > 0 else { throw ValidationError("timeouts must be positive") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
    }

    /// A group name or number, for --socket-group.
    static func groupID(_ text: String) throws -> UInt32 {
        if let number = UInt32(text) { return number }
        guard let entry = getgrnam(text) else {
            throw ShimError(.invalidArgument, "--socket-group: no group named '\(text)' (see /etc/group), give a group name or number")
        }
        return entry.pointee.gr_gid
    }

    func execute() async throws {
        let rootPath = RunDirectory.resolveRoot(runRoot, environment: environmentDictionary())
        let group: UInt32?
        let qemuCredentials: ProcessCredentials?
        do {
            group = try socketGroup.map(RunOptions.groupID)
            guard qemuGroup == nil || qemuUser != nil else {
                throw ShimError(.invalidArgument, "--qemu-group needs --qemu-user (the group alone would leave QEMU root)")
            }
            qemuCredentials = try qemuUser.map { try ProcessCredentials.resolve(user: $0, group: qemuGroup) }
        } catch {
            throw report(error)
        }
        // The run directory is named after the domain, so parse first (once:
        // the supervisor gets this parse).
        let text: String
        let parsed: DomainParser.Parsed
        do {
            text = try FileIO.readString(xml)
            parsed = try DomainParser(file: xml).parse(text)
        } catch {
            throw report(error)
        }
        let config = ShimConfiguration(
            xmlPath: xml, runDirectory: RunDirectory(root: rootPath, name: parsed.spec.name),
            logDirectory: logDir ?? RunDirectory.defaultLogDirectory(root: rootPath), startPaused: paused,
            shutdownTimeout: seconds(shutdownTimeout), qmpTimeout: seconds(qmpTimeout), saveDirectory: saveDir,
            forceBoot: forceBoot, bypassCacheOnRestore: bypassCache, socketGroup: group, qemuCredentials: qemuCredentials,
            registrar: RegistrarTarget.resolve(registrar, runRoot: rootPath))
        let code = await ShimRunner.run(
            config: config, xml: text, spec: parsed.spec, logLevel: Logger.Level(rawValue: logLevel) ?? .info)
        throw ExitCode(code)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start (or reattach to) the guest described by a domain XML and supervise it in the foreground.")

    @OptionGroup var root: RunRootOption

    @Flag(help: "Start with the vCPUs paused.")
    var paused = false

    @Option(help: ArgumentHelp("Seconds the guest gets to power off on SIGTERM/SIGINT before QEMU is quit.", valueName: "seconds"))
    var shutdownTimeout: Double = RunOptions.defaultShutdownTimeout

    @Option(help: ArgumentHelp("Seconds to wait for any QMP reply.", valueName: "seconds"))
    var qmpTimeout: Double = RunOptions.defaultQMPTimeout

    @Option(help: ArgumentHelp("Directory for QEMU's log (default /var/log/vmshim, or <run-root>/log with a custom root).", valueName: "dir"))
    var logDir: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = RunOptions.defaultLogLevel

    @Option(help: ArgumentHelp("Directory of managed-save images (default /var/lib/vmshim/save, or <run-root>/save with a custom root).", valueName: "dir"))
    var saveDir: String?

    @Flag(help: "Boot cold even if the domain has a managed-save image (the image is discarded).")
    var forceBoot = false

    @Flag(help: "Read a managed-save image with O_DIRECT, bypassing the page cache.")
    var bypassCache = false

    @Option(help: ArgumentHelp("Group (name or number) that may use control.sock besides root and this user; the socket is then 0660.", valueName: "group"))
    var socketGroup: String?

    @Option(help: ArgumentHelp("Run QEMU as this user (name or number), with its supplementary groups.", valueName: "user"))
    var qemuUser: String?

    @Option(help: ArgumentHelp("Run QEMU with this group (default: the user's primary group).", valueName: "group"))
    var qemuGroup: String?

    @Option(help: ArgumentHelp("The registrar's socket, or 'none' (default: <run-root>/registrar.sock, i.e. /run/vmshim/registrar.sock).", valueName: "path"))
    var registrar: String?

    @Argument(help: ArgumentHelp("The libvirt domain XML.", valueName: "guest.xml"))
    var xml: String

    var options: RunOptions {
        RunOptions(
            runRoot: root.runRoot, paused: paused, shutdownTimeout: shutdownTimeout, qmpTimeout: qmpTimeout, logDir: logDir,
            logLevel: logLevel, saveDir: saveDir, forceBoot: forceBoot, bypassCache: bypassCache, socketGroup: socketGroup,
            qemuUser: qemuUser, qemuGroup: qemuGroup, registrar: registrar, xml: xml)
    }

    func validate() throws { try options.validate() }

    func run() async throws { try await options.execute() }
}

// MARK: - list / status

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the domains under the run root, and those stopped with a managed-save image.")
    @OptionGroup var root: RunRootOption
    @Option(help: ArgumentHelp("Directory of managed-save images (default as for 'run').", valueName: "dir"))
    var saveDir: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(help: ArgumentHelp("List through this registrar, or 'none' for the run directories (default: <run-root>/registrar.sock when a registrar serves it).", valueName: "path"))
    var registrar: String?

    func run() async throws {
        if let target = RegistrarTarget.resolve(registrar, runRoot: root.resolved),
            target.explicit || UnixSocket.isListening(path: target.socketPath)
        {
            do {
                let domains = try await RegistrarClient(socketPath: target.socketPath).listDomains()
                printRegistrarListing(domains)
                return
            } catch {
                throw report(error)
            }
        }
        let entries = DomainDirectory(root: root.resolved).entries()
        let running = Set(entries.map(\.runDirectory.name))
        // Saved domains without a run directory, as `virsh list --all` shows them "shut off" with a managed save.
        let saved = savedDomains(in: saveDir ?? RunDirectory.defaultSaveDirectory(root: root.resolved))
            .filter { !running.contains($0.name) }
        if json {
            let items: [JSONValue] = entries.map { entry in
                var object: JSONObject = ["name": .string(entry.runDirectory.name)]
                if let status = entry.status {
                    object["uuid"] = .string(status.uuid)
                    object["state"] = .string(listedState(entry))
                    object["reason"] = .string(status.reason)
                    object["shimPid"] = .int(Int64(status.shim.pid))
                    object["qemuPid"] = .int(Int64(status.qemu?.pid ?? 0))
                } else {
                    object["state"] = .string(listedState(entry))
                }
                object["shimAlive"] = .bool(entry.shimAlive)
                return .object(object)
            } + saved.map { domain in
                var object: JSONObject = [
                    "name": .string(domain.name), "state": "saved", "shimAlive": false, "image": .string(domain.image),
                ]
                if let uuid = domain.uuid { object["uuid"] = .string(uuid) }
                object["reason"] = .string(domain.uuid == nil ? "damaged-image" : domain.guestWasRunning ? "running" : "paused")
                return .object(object)
            }
            print(JSONValue.array(items).description)
            return
        }
        var rows = [["NAME", "UUID", "STATE", "QEMU PID", "SHIM PID"]]
        for entry in entries {
            rows.append([
                entry.runDirectory.name, entry.status?.uuid ?? "-", listedState(entry),
                entry.status?.qemu.map { String($0.pid) } ?? "-",
                entry.shimAlive ? (entry.status.map { String($0.shim.pid) } ?? "-") : "-",
            ])
        }
        for domain in saved {
            rows.append([domain.name, domain.uuid ?? "-", "saved", "-", "-"])
        }
        printTable(rows)
    }

    /// The registrar's view: every domain on the host, whichever run root,
    /// pod or shell started it, with its main figures.
    func printRegistrarListing(_ domains: [Vmshim_Registrar_V1_Domain]) {
        if json {
            let items: [JSONValue] = domains.map { domain in
                let object: JSONObject = [
                    "name": .string(domain.identity.name), "uuid": .string(domain.identity.uuid),
                    "state": .string(RegistrationWire.name(domain.status.state)), "reason": .string(domain.status.reason),
                    "connected": .bool(domain.connected), "source": .string(domain.source),
                    "shimPid": .int(Int64(domain.identity.shimPid)), "qemuPid": .int(Int64(domain.status.qemuPid)),
                    "vcpus": .uint(UInt64(domain.identity.vcpus)), "memoryKiB": .uint(domain.identity.memoryKib),
                    "balloonKiB": .uint(domain.resources.balloonActualKib), "qemuRssKiB": .uint(domain.resources.qemuRssKib),
                    "qemuPssKiB": .uint(domain.resources.qemuPssKib), "shimRssKiB": .uint(domain.resources.shimRssKib),
                    "cpuTimeMicros": .uint(domain.resources.qemuCpuTimeMicros),
                    "runDirectory": .string(domain.identity.runDirectory),
                    "controlSocket": .string(domain.identity.controlSocket),
                    "disks": .array(domain.resources.disks.map { disk in
                        .object([
                            "target": .string(disk.target), "source": .string(disk.source),
                            "capacityBytes": .uint(disk.capacityBytes), "allocationBytes": .uint(disk.allocationBytes),
                            "readBytes": .uint(disk.readBytes), "writeBytes": .uint(disk.writeBytes),
                        ])
                    }),
                ]
                return .object(object)
            }
            print(JSONValue.array(items).description)
            return
        }
        var rows = [["NAME", "UUID", "STATE", "QEMU PID", "SHIM PID", "VCPUS", "MEMORY", "QEMU RSS", "CPU TIME"]]
        for domain in domains {
            let cpu = Double(domain.resources.qemuCpuTimeMicros) / 1_000_000
            rows.append([
                domain.identity.name, domain.identity.uuid, RegistrationWire.name(domain.status.state),
                domain.status.qemuPid > 0 ? String(domain.status.qemuPid) : "-",
                domain.connected ? String(domain.identity.shimPid) : "-", String(domain.identity.vcpus),
                "\(domain.identity.memoryKib / 1024) MiB",
                domain.resources.qemuRssKib > 0 ? "\(domain.resources.qemuRssKib / 1024) MiB" : "-",
                String(format: "%.1fs", cpu),
            ])
        }
        printTable(rows)
    }

    /// Complete `NAME.save` images (partial and `.corrupt` ones are not
    /// domains); a damaged one is listed without a UUID.
    func savedDomains(in directory: String) -> [(name: String, uuid: String?, guestWasRunning: Bool, image: String)] {
        FileIO.listDirectory(directory).filter { $0.hasSuffix(".save") }.sorted().map { file in
            let path = directory + "/" + file
            let name = String(file.dropLast(".save".count))
            guard let image = try? SaveImage.read(path: path),
                let spec = try? DomainParser(file: path).parse(image.xml).spec
            else { return (name, nil, false, path) }
            return (name, spec.uuid.description, image.guestWasRunning, path)
        }
    }
}

/// The state a listing shows: the shim's own word when it is alive, otherwise
/// what is left (a QEMU without its shim can be reattached).
func listedState(_ entry: DomainDirectory.Entry) -> String {
    guard let status = entry.status else { return entry.shimAlive ? "starting" : "stale" }
    if entry.shimAlive { return status.state.rawValue }
    return entry.qemuAlive ? "orphaned" : "stale"
}

func printTable(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    let widths = (0..<first.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
        }
        print(cells.joined(separator: "  "))
    }
}

struct DomainArgument: ParsableArguments {
    @OptionGroup var root: RunRootOption
    @Argument(help: ArgumentHelp("Domain name or UUID.", valueName: "NAME"))
    var name: String

    func entry() throws -> DomainDirectory.Entry {
        try DomainDirectory(root: root.resolved).find(name)
    }

    func client(timeout: Duration = .seconds(120)) throws -> ControlClient {
        let found = try entry()
        guard found.shimAlive else {
            if found.qemuAlive {
                throw ShimError(
                    .unavailable,
                    "domain '\(found.runDirectory.name)' has no running vmshim (its QEMU still runs): start 'vmshim run' with its XML to reattach")
            }
            throw ShimError(.notFound, "domain '\(found.runDirectory.name)' is not running (stale run directory \(found.runDirectory.path))")
        }
        return ControlClient(socketPath: found.runDirectory.controlSocket, timeout: timeout)
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a domain's state, pids and sockets.")
    @OptionGroup var domain: DomainArgument
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Print the live domain XML.") var xml = false

    func run() async throws {
        do {
            let state = try await domain.client().state(includeXML: xml)
            if xml {
                print(state.liveXml, terminator: "")
                return
            }
            if json {
                print(statusJSON(state).description)
                return
            }
            var rows: [(String, String)] = [
                ("Name", state.name), ("UUID", state.uuid), ("State", "\(stateName(state.state)) (\(state.reason))"),
                ("Shim pid", String(state.shimPid)), ("QEMU pid", String(state.qemuPid)), ("vCPUs", String(state.vcpus)),
                ("Memory", "\(state.memoryKib) KiB"), ("Control socket", state.controlSocket),
                ("QMP socket", state.qmpSocket), ("Log", state.logFile),
            ]
            if state.reattached { rows.append(("Reattached", "yes")) }
            for device in state.charDevices { rows.append((device.alias, device.path)) }
            let width = rows.map(\.0.count).max() ?? 0
            for (key, value) in rows {
                print("\(key):" + String(repeating: " ", count: width - key.count + 1) + value)
            }
        } catch {
            throw report(error)
        }
    }
}

func stateName(_ state: Vmshim_Control_V1_State) -> String {
    switch state {
    case .starting: return "starting"
    case .running: return "running"
    case .paused: return "paused"
    case .shuttingDown: return "shutting-down"
    case .shutoff: return "shutoff"
    case .crashed: return "crashed"
    default: return "unknown"
    }
}

func statusJSON(_ state: Vmshim_Control_V1_DomainState) -> JSONValue {
    var devices = JSONObject()
    for device in state.charDevices { devices[device.alias] = .string(device.path) }
    return .object([
        "name": .string(state.name), "uuid": .string(state.uuid), "state": .string(stateName(state.state)),
        "reason": .string(state.reason), "shimPid": .int(Int64(state.shimPid)), "qemuPid": .int(Int64(state.qemuPid)),
        "qemuStartTime": .number(state.qemuStartTime), "vcpus": .int(Int64(state.vcpus)),
        "memoryKiB": .number(state.memoryKib), "controlSocket": .string(state.controlSocket),
        "qmpSocket": .string(state.qmpSocket), "logFile": .string(state.logFile),
        "startedAt": .int(state.startedAtUnix), "reattached": .bool(state.reattached), "charDevices": .object(devices),
    ])
}

// MARK: - lifecycle operations

func printState(_ state: Vmshim_Control_V1_DomainState) {
    print("\(state.name): \(stateName(state.state)) (\(state.reason))")
}

struct Shutdown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Press the ACPI power button and wait for the guest to power off.")
    @OptionGroup var domain: DomainArgument
    @Option(help: ArgumentHelp("Seconds to wait (default: the shim's --shutdown-timeout).", valueName: "seconds"))
    var timeout: UInt32 = 0
    @Flag(help: "Quit QEMU when the guest has not powered off in time.") var force = false
    @Flag(help: "Return once the button is pressed.") var noWait = false

    func run() async throws {
        do {
            let limit = Duration.seconds(Int(timeout == 0 ? 3600 : timeout) + 30)
            printState(try await domain.client(timeout: limit).shutdown(timeoutSeconds: timeout, force: force, wait: !noWait))
        } catch {
            throw report(error)
        }
    }
}

struct Reboot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reboot the guest through ACPI (or --reset for a hardware reset).")
    @OptionGroup var domain: DomainArgument
    @Flag(help: "Hardware reset instead of asking the guest.") var reset = false

    func run() async throws {
        do { printState(try await domain.client().reboot(reset: reset)) } catch { throw report(error) }
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause the guest's vCPUs.")
    @OptionGroup var domain: DomainArgument
    func run() async throws {
        do { printState(try await domain.client().pause()) } catch { throw report(error) }
    }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume the guest's vCPUs.")
    @OptionGroup var domain: DomainArgument
    func run() async throws {
        do { printState(try await domain.client().resume()) } catch { throw report(error) }
    }
}

struct Destroy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop QEMU at once (SIGTERM, then SIGKILL after a grace period).")
    @OptionGroup var domain: DomainArgument
    @Option(help: ArgumentHelp("Seconds between SIGTERM and SIGKILL.", valueName: "seconds")) var grace: UInt32 = 0
    func run() async throws {
        do { printState(try await domain.client().destroy(graceSeconds: grace)) } catch { throw report(error) }
    }
}

struct Save: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Save the guest's state to a managed-save image and stop it; 'vmshim run' restores it.")
    @OptionGroup var domain: DomainArgument
    @Flag(help: "Write the image with O_DIRECT, bypassing the page cache.") var bypassCache = false
    @Option(help: ArgumentHelp("Limit the state stream to this many MiB/s (default: unlimited).", valueName: "MiB"))
    var bandwidth: UInt64 = 0

    func run() async throws {
        do {
            let saved = try await domain.client().save(bypassCache: bypassCache, bandwidthMiBPerSecond: bandwidth)
            print(
                "\(domain.name): saved to \(saved.imagePath) (\(saved.streamBytes) bytes in \(saved.durationMicros / 1000) ms, guest \(saved.guestWasRunning ? "running" : "paused"))")
        } catch {
            throw report(error)
        }
    }
}

// MARK: - qmp / events

struct QMP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send one raw QMP command; print QEMU's reply (exit status 1 on a QMP error).")
    @OptionGroup var domain: DomainArgument
    @Argument(help: ArgumentHelp("A QMP command, e.g. '{\"execute\":\"query-status\"}'.", valueName: "JSON"))
    var command: String

    func run() async throws {
        let response: Vmshim_Control_V1_QMPResponse
        do {
            response = try await domain.client().qmp(command)
        } catch {
            throw report(error)
        }
        print(response.replyJson)
        if response.isError { throw ExitCode(1) }
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the domain's events as JSON lines until it ends.")
    @OptionGroup var domain: DomainArgument
    @Flag(help: "Include every QMP event.") var qmp = false

    func run() async throws {
        do {
            try await domain.client().watchEvents(includeQMP: qmp) { event in
                var object: JSONObject = ["sequence": .number(event.sequence), "time": .int(event.timestampUnixMicros)]
                switch event.kind {
                case .lifecycle(let lifecycle)?:
                    object["state"] = .string(stateName(lifecycle.state))
                    object["reason"] = .string(lifecycle.reason)
                case .qmp(let qmpEvent)?:
                    object["event"] = .string(qmpEvent.name)
                    object["data"] = (try? JSONValue.parse(qmpEvent.dataJson)) ?? .null
                case .diskChange(let change)?:
                    object["event"] = "disk-change"
                    object["data"] = [
                        "dev": .string(change.targetDev), "alias": .string(change.alias),
                        "oldSource": .string(change.oldSource), "reason": .string(change.reason),
                    ]
                case nil:
                    break
                }
                print(JSONValue.object(object).description)
                return true
            }
        } catch {
            throw report(error)
        }
    }
}

// MARK: - validate

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a domain XML against libvirt's schema (when installed) and vmshim's own rules.")
    @Option(help: ArgumentHelp("RelaxNG schema to use.", valueName: "path"))
    var schema: String = SchemaValidator.defaultSchema
    @Argument(help: ArgumentHelp("The libvirt domain XML.", valueName: "guest.xml"))
    var xml: String

    func run() async throws {
        do {
            let text = try FileIO.readString(xml)
            if FileIO.exists(schema) {
                let problems = try SchemaValidator.validate(text, file: xml, schema: schema)
                if !problems.isEmpty {
                    for problem in problems { printError("\(xml):\(problem.line): \(problem.message)") }
                    printError("\(xml): does not match libvirt's schema \(schema)")
                    throw ExitCode(1)
                }
                print("\(xml): matches libvirt's schema (\(schema))")
            } else {
                print("\(xml): libvirt's schema is not installed (\(schema)); checked vmshim's rules only")
            }
            let parsed = try DomainParser(file: xml).parse(text)
            let runDirectory = RunDirectory(root: RunDirectory.defaultRoot, name: parsed.spec.name)
            let prepared = try DomainDefaults(
                file: xml, environment: DomainDefaults.Environment(runDirectory: runDirectory, freeDisplayPort: { _, taken in (5900...65535).first { !taken.contains($0) } ?? 5900 })
            ).apply(parsed.spec)
            var checkable = prepared
            if checkable.cpu.mode == .hostModel {
                // Decided at start from what QEMU offers; the rest is checked with a stand-in.
                checkable.cpu.mode = .custom
                checkable.cpu.model = "qemu64"
            }
            _ = try QEMUCommandLine.plan(
                checkable, context: QEMUCommandLine.Context(runDirectory: runDirectory, now: 0, localTimeOffset: 0))
            print("\(xml): vmshim can run domain '\(prepared.name)'")
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw report(error)
        }
    }
}
