#if canImport(Glibc)
import Glibc
#endif

/// Builds the registrar protocol's messages from what the shim knows
/// (proto/vmshim/registrar/v1/registrar.proto).
public enum RegistrationWire {
    public typealias Snapshot = Vmshim_Registrar_V1_Snapshot
    public typealias Identity = Vmshim_Registrar_V1_DomainIdentity
    public typealias Status = Vmshim_Registrar_V1_DomainStatus
    public typealias Resources = Vmshim_Registrar_V1_Resources

    public static func state(_ state: VMState) -> Vmshim_Registrar_V1_State {
        switch state {
        case .starting: return .starting
        case .running: return .running
        case .paused: return .paused
        case .shuttingDown: return .shuttingDown
        case .shutoff: return .shutoff
        case .crashed: return .crashed
        }
    }

    /// The registrar's word for a state, as `vmshim list` prints it.
    public static func name(_ state: Vmshim_Registrar_V1_State) -> String {
        switch state {
        case .starting: return VMState.starting.rawValue
        case .running: return VMState.running.rawValue
        case .paused: return VMState.paused.rawValue
        case .shuttingDown: return VMState.shuttingDown.rawValue
        case .shutoff: return VMState.shutoff.rawValue
        case .crashed: return VMState.crashed.rawValue
        case .unreachable: return "unreachable"
        case .unspecified, .UNRECOGNIZED: return "unknown"
        }
    }

    /// Parses a state name as `name(_:)` prints it (for filters on the CLI).
    public static func parseState(_ text: String) -> Vmshim_Registrar_V1_State? {
        let all: [Vmshim_Registrar_V1_State] = [.starting, .running, .paused, .shuttingDown, .shutoff, .crashed, .unreachable]
        return all.first { name($0) == text }
    }

    public static func identity(_ facts: RegistrationFacts, runDirectory: RunDirectory, version: String) -> Identity {
        var identity = Identity()
        identity.uuid = facts.uuid
        identity.name = facts.name
        identity.shimPid = getpid()
        identity.shimVersion = version
        identity.runDirectory = runDirectory.path
        identity.controlSocket = runDirectory.controlSocket
        identity.readOnlyControlSocket = runDirectory.readOnlyControlSocket
        identity.statusFile = runDirectory.statusFile
        identity.logFile = facts.logFile
        identity.vcpusMax = UInt32(clamping: facts.vcpusMax)
        identity.vcpus = UInt32(clamping: facts.vcpus)
        identity.memoryKib = facts.memoryKiB
        identity.maxMemoryKib = facts.maxMemoryKiB
        identity.qemuVersion = facts.qemuVersion
        identity.qemuBinary = facts.qemuBinary
        identity.cgroup = facts.cgroup
        return identity
    }

    public static func status(_ facts: RegistrationFacts) -> Status {
        var status = Status()
        status.state = state(facts.state)
        status.reason = facts.reason
        status.qemuPid = facts.qemuPID
        status.qemuStartTime = facts.qemuStartTime
        status.startedAtUnix = facts.startedAt
        status.reattached = facts.reattached
        return status
    }

    public static func nowMicros() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }
}
