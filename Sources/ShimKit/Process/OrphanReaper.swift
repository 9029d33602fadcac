import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The children the shim waits for itself (QEMU, through its pidfd). The
/// orphan reaper must never collect one of them, or the shim would lose its
/// exit status; spawning and registering happen under the same lock as a
/// reaper pass, so a child that dies at once is never mistaken for an orphan.
public enum OwnChildren {
    static let pids = Mutex<Set<pid_t>>([])

    /// Runs `spawn` (which returns the new pid, or nil when nothing was
    /// started) and records the pid, atomically with respect to reaping.
    static func spawn(_ spawn: () -> pid_t?) {
        pids.withLock { set in
            if let pid = spawn() { set.insert(pid) }
        }
    }

    static func forget(_ pid: pid_t) {
        _ = pids.withLock { $0.remove(pid) }
    }
}

/// When vmshim is a container's main process (PID 1), processes orphaned
/// inside the container are re-parented to it and, unreaped, stay zombies
/// for the pod's life. This collects them: every second it looks for zombie
/// children in /proc and reaps each one that is not the shim's own.
public final class OrphanReaper: Sendable {
    // Dispatch sources are thread-safe; only cancelled in deinit.
    private nonisolated(unsafe) let timer: any DispatchSourceTimer

    /// Starts reaping when this process is PID 1 of its PID namespace; nil otherwise.
    public static func startIfInit(interval: DispatchTimeInterval = .seconds(1)) -> OrphanReaper? {
        getpid() == 1 ? OrphanReaper(interval: interval) : nil
    }

    init(interval: DispatchTimeInterval) {
        let timer = DispatchSource.makeTimerSource(queue: .global())
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(100))
        timer.setEventHandler { _ = OrphanReaper.reapOnce() }
        timer.resume()
        self.timer = timer
    }

    deinit { timer.cancel() }

    /// One pass; returns the pids it reaped.
    @discardableResult
    static func reapOnce() -> [pid_t] {
        let me = getpid()
        return OwnChildren.pids.withLock { own in
            var reaped: [pid_t] = []
            for entry in FileIO.listDirectory("/proc") {
                guard let pid = pid_t(entry), pid != me, !own.contains(pid),
                    let stat = try? FileIO.readString("/proc/\(pid)/stat"),
                    let close = stat.lastIndex(of: ")")
                else { continue }
                // After "pid (comm)": state, then ppid.
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                guard fields.count > 1, fields[0] == "Z", pid_t(fields[1]) == me else { continue }
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { reaped.append(pid) }
            }
            return reaped
        }
    }
}
