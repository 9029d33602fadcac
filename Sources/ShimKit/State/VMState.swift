/// The VM's state as vmshim reports it, modelled on libvirt's domain states.
public enum VMState: String, Sendable, Codable, CaseIterable {
    /// QEMU is being launched (or reattached) and set up; vCPUs not started.
    case starting
    case running
    case paused
    /// A graceful shutdown was requested and has not finished yet.
    case shuttingDown = "shutting-down"
    /// QEMU is gone; the shim is about to exit.
    case shutoff
    /// The guest panicked or QEMU died unexpectedly.
    case crashed

    /// Which operations the state allows; the one source of "wrong state" errors.
    public func allows(_ operation: VMOperation) -> Bool {
        switch (self, operation) {
        case (.shutoff, _), (.crashed, .pause), (.crashed, .resume), (.crashed, .shutdown), (.crashed, .reboot):
            return false
        case (.starting, .destroy):
            return true
        case (.starting, _):
            return false
        case (.running, .resume), (.paused, .pause):
            return false
        case (.shuttingDown, .pause), (.shuttingDown, .resume), (.shuttingDown, .reboot), (.shuttingDown, .save):
            return false
        case (.crashed, .save):
            return false
        default:
            return true
        }
    }
}

public enum VMOperation: String, Sendable {
    case shutdown, reboot, pause, resume, destroy, qmp, save
}
