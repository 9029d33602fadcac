#if canImport(Glibc)
import Glibc
#endif

/// An exclusive flock on `<run dir>/lock`, held for the shim's whole life.
///
/// The kernel drops it when the shim dies (even by SIGKILL), so "lock held"
/// means "a live shim owns this domain" with no pid guessing.
public final class RunDirectoryLock: Sendable {
    private let fd: Int32
    public let path: String

    public static func acquire(_ runDirectory: RunDirectory) throws -> RunDirectoryLock {
        let path = "\(runDirectory.path)/lock"
        // Retry when the file was unlinked between open and flock (the
        // previous shim removing its directory): a lock on a dead inode protects nothing.
        for _ in 0..<5 {
            try runDirectory.create()
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw ShimError.system("cannot open \(path)") }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                close(fd)
                if code == EWOULDBLOCK {
                    let owner = (try? StatusFile.read(from: runDirectory.statusFile)).map { " (vmshim pid \($0.shim.pid))" } ?? ""
                    throw ShimError(
                        .alreadyExists,
                        "domain '\(runDirectory.name)' is already supervised by another vmshim\(owner); its run directory is \(runDirectory.path)")
                }
                throw ShimError.system("cannot lock \(path)", errno: code)
            }
            var opened = stat()
            var current = stat()
            if fstat(fd, &opened) == 0, stat(path, &current) == 0, opened.st_ino == current.st_ino, opened.st_dev == current.st_dev {
                return RunDirectoryLock(fd: fd, path: path)
            }
            close(fd)
        }
        throw ShimError(.unavailable, "could not lock \(path): it keeps being replaced")
    }

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// True when a live process holds the lock (used by `vmshim list` to tell
    /// a running shim from a stale directory).
    public static func isHeld(_ runDirectory: RunDirectory) -> Bool {
        let fd = open("\(runDirectory.path)/lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return false
        }
        return errno == EWOULDBLOCK
    }

    deinit {
        close(fd)
    }
}
