#if canImport(Glibc)
import Glibc
#endif

/// Unix-socket helpers the launcher needs before QEMU exists.
public enum UnixSocket {
    /// The kernel's limit for sun_path, including the terminating NUL.
    public static let maximumPathLength = 108

    public static func checkPathLength(_ path: String) throws {
        guard path.utf8.count < maximumPathLength else {
            throw ShimError(
                .invalidArgument,
                "socket path \(path) is \(path.utf8.count) bytes; unix sockets allow at most \(maximumPathLength - 1): choose a shorter --run-root"
            )
        }
    }

    /// Creates, binds and listens on a unix socket; returns the fd (CLOEXEC).
    /// A stale socket file at `path` is replaced; any other file is an error.
    /// With `group`, the socket file is given to that group (for a 0660 mode).
    public static func listen(path: String, mode: mode_t = 0o600, backlog: Int32 = 16, group: UInt32? = nil) throws -> Int32 {
        try checkPathLength(path)
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw ShimError(.alreadyExists, "\(path) exists and is not a socket; remove it or choose another path")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ShimError.system("cannot create a unix socket for \(path)") }
        var address = socketAddress(path)
        // Linux gives the socket file the socket inode's mode minus the
        // umask, so fchmod first: the file is never wider than `mode`, and
        // the process-wide umask (other threads create files meanwhile) is
        // never touched. chmod then widens it to exactly `mode`.
        fchmod(fd, mode)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            let error = ShimError.system("cannot bind \(path)")
            close(fd)
            throw error
        }
        guard chmod(path, mode) == 0 else {
            let error = ShimError.system("cannot set the mode of \(path)")
            close(fd)
            unlink(path)
            throw error
        }
        if let group, chown(path, getuid(), group) != 0 {
            let error = ShimError.system("cannot give \(path) to group \(group)")
            close(fd)
            unlink(path)
            throw error
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let error = ShimError.system("cannot listen on \(path)")
            close(fd)
            unlink(path)
            throw error
        }
        return fd
    }

    /// True when something accepts connections at `path`.
    public static func isListening(path: String) -> Bool {
        guard path.utf8.count < maximumPathLength else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return connect(fd, path) == 0
    }

    /// A connected, non-blocking (CLOEXEC) stream socket to `path`. On a unix
    /// socket connect never waits: it succeeds into the listener's backlog or
    /// fails (EAGAIN when the backlog is full), so it is safe on any thread.
    public static func connectNonBlocking(path: String) throws -> Int32 {
        try checkPathLength(path)
        let flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let fd = socket(AF_UNIX, flags, 0)
        guard fd >= 0 else { throw ShimError.system("cannot create a unix socket for \(path)") }
        guard connect(fd, path) == 0 else {
            let error = ShimError.system("cannot connect to \(path)")
            close(fd)
            throw error
        }
        return fd
    }

    private static func connect(_ fd: Int32, _ path: String) -> Int32 {
        var address = socketAddress(path)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    private static func socketAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        return address
    }
}
