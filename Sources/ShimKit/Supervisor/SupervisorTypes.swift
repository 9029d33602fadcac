/// How a shim runs one VM (from the CLI flags).
public struct ShimConfiguration: Sendable {
    public var xmlPath: String
    public var runDirectory: RunDirectory
    public var logDirectory: String
    public var startPaused: Bool
    /// SIGTERM/Shutdown: how long the guest gets to power off before QEMU is quit.
    public var shutdownTimeout: Duration
    public var qmpTimeout: Duration
    /// Destroy: SIGTERM to QEMU, then SIGKILL after this.
    public var destroyGrace: Duration
    public var version: String
    /// Where managed-save images live (`NAME.save`).
    public var saveDirectory: String
    /// Boot cold even when a managed-save image exists (it is discarded).
    public var forceBoot: Bool
    /// Read a managed-save image with O_DIRECT when restoring.
    public var bypassCacheOnRestore: Bool
    /// Group given the read-write control socket (0660) and allowed by the
    /// peer check; nil: root and the shim's user only (0600).
    public var socketGroup: UInt32?
    /// QEMU's user and group (`--qemu-user`, `--qemu-group`); nil: the shim's.
    public var qemuCredentials: ProcessCredentials?
    /// Where to register the domain; nil: nowhere (`--registrar none`).
    public var registrar: RegistrarTarget?

    public init(
        xmlPath: String, runDirectory: RunDirectory, logDirectory: String, startPaused: Bool = false,
        shutdownTimeout: Duration = .seconds(60), qmpTimeout: Duration = .seconds(30), destroyGrace: Duration = .seconds(10),
        version: String = VMShimVersion.current, saveDirectory: String? = nil, forceBoot: Bool = false,
        bypassCacheOnRestore: Bool = false, socketGroup: UInt32? = nil, qemuCredentials: ProcessCredentials? = nil,
        registrar: RegistrarTarget? = nil
    ) {
        self.xmlPath = xmlPath
        self.runDirectory = runDirectory
        self.logDirectory = logDirectory
        self.startPaused = startPaused
        self.shutdownTimeout = shutdownTimeout
        self.qmpTimeout = qmpTimeout
        self.destroyGrace = destroyGrace
        self.version = version
        self.saveDirectory = saveDirectory ?? RunDirectory.defaultSaveDirectory(root: runDirectory.root)
        self.forceBoot = forceBoot
        self.bypassCacheOnRestore = bypassCacheOnRestore
        self.socketGroup = socketGroup
        self.qemuCredentials = qemuCredentials
        self.registrar = registrar
    }

    public var logFile: String { "\(logDirectory)/\(runDirectory.name).log" }
}

public enum VMShimVersion {
    public static let current = "0.2.0"
    /// API packages the control socket serves.
    public static let controlAPIs = ["vmshim.control.v1"]
}

/// The registrar a shim registers with (`vmshim run --registrar`).
public struct RegistrarTarget: Sendable, Equatable {
    public var socketPath: String
    /// Named on the command line: its absence is worth a warning, while the
    /// default path is only used when a registrar runs.
    public var explicit: Bool

    public init(socketPath: String, explicit: Bool) {
        self.socketPath = socketPath
        self.explicit = explicit
    }

    /// `--registrar PATH|none`; without it `<run root>/registrar.sock`.
    public static func resolve(_ option: String?, runRoot: String) -> RegistrarTarget? {
        switch option {
        case "none": return nil
        case let path?: return RegistrarTarget(socketPath: path, explicit: true)
        case nil: return RegistrarTarget(socketPath: runRoot + "/registrar.sock", explicit: false)
        }
    }
}

/// What a managed save wrote.
public struct SaveResult: Sendable {
    public var imagePath: String
    public var streamBytes: UInt64
    public var duration: Duration
    public var guestWasRunning: Bool
}

/// One event on a VM's event stream (WatchEvents).
public struct VMEvent: Sendable {
    public enum Kind: Sendable {
        case lifecycle(state: VMState, reason: String)
        case qmp(QMPEvent)
        /// startupPolicy='optional' left a missing medium or disk out at start.
        case diskDropped(targetDev: String, alias: String, source: String, reason: String)
    }
    public var sequence: UInt64
    public var timestampMicros: Int64
    public var kind: Kind
}

/// The facts a registration reports (registrar.proto's identity and status).
public struct RegistrationFacts: Sendable {
    public var name: String
    public var uuid: String
    public var state: VMState
    public var reason: String
    public var qemuPID: Int32
    public var qemuStartTime: UInt64
    public var startedAt: Int64
    public var reattached: Bool
    public var vcpusMax: Int
    public var vcpus: Int
    public var memoryKiB: UInt64
    public var maxMemoryKiB: UInt64
    public var qemuVersion: String
    public var qemuBinary: String
    public var logFile: String
    public var cgroup: String
    public var disks: [(target: String, alias: String, source: String)]
}

/// A point-in-time view of the VM (GetState, `vmshim status`).
public struct VMStatus: Sendable {
    public var name: String
    public var uuid: String
    public var state: VMState
    public var reason: String
    public var shimPID: Int32
    public var qemuPID: Int32
    public var qemuStartTime: UInt64
    public var qmpSocket: String
    public var controlSocket: String
    public var logFile: String
    public var startedAt: Int64
    public var vcpus: Int
    public var memoryKiB: UInt64
    public var charDevices: [(alias: String, path: String)]
    public var reattached: Bool
    public var liveXML: String
    public var qemuVersion: String
    public var qemuBinary: String
}

/// How the shim ends: its exit code and a line for the user.
public struct ShimOutcome: Sendable, Equatable {
    public var exitCode: Int32
    public var state: VMState
    public var reason: String
    public var message: String

    /// Exit codes, documented in docs/cli.md.
    public enum Code {
        /// The guest shut down (by itself, on request, or destroyed).
        public static let success: Int32 = 0
        /// vmshim could not start the VM (bad XML, QEMU refused to start, …).
        public static let startFailed: Int32 = 1
        /// QEMU exited or died without a shutdown (crash, SIGKILL, …).
        public static let qemuCrashed: Int32 = 3
        /// The guest panicked and on_crash is destroy.
        public static let guestPanicked: Int32 = 4
        /// The shim lost QEMU's monitor; QEMU was left running for a new shim.
        public static let monitorLost: Int32 = 5
    }
}
