#if canImport(Glibc)
import Glibc
#endif

/// Small, synchronous file helpers for run-directory and /proc files.
///
/// These block for microseconds on tmpfs and procfs; callers on the
/// cooperative pool that may touch slow storage use `BlockingIO.run`.
public enum FileIO {
    public static func readBytes(_ path: String, limit: Int = 64 << 20) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ShimError.system("cannot open \(path)") }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ShimError.system("cannot read \(path)")
            }
            if count == 0 { break }
            result.append(contentsOf: chunk[0..<count])
            if result.count > limit { throw ShimError(.invalidArgument, "\(path) is larger than \(limit) bytes") }
        }
        return result
    }

    public static func readString(_ path: String) throws -> String {
        String(decoding: try readBytes(path), as: UTF8.self)
    }

    /// nil when the file does not exist; other errors are thrown.
    public static func readStringIfPresent(_ path: String) throws -> String? {
        guard exists(path) else { return nil }
        do {
            return try readString(path)
        } catch let error as ShimError where (error.cause as? SystemError)?.errno == ENOENT {
            return nil
        }
    }

    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Writes `bytes` to `path` atomically: a temporary file in the same
    /// directory, fsync, rename over the target, fsync the directory. Readers
    /// see the old or the new content, never a mix; a crash leaves at most a
    /// stray temporary file, never a torn target.
    ///
    /// `durable` adds fsync of the file and its directory, for data that must
    /// survive a host crash; rename alone already protects against a crash of
    /// the writing process.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600, durable: Bool = true) throws {
        let directory = parentDirectory(of: path)
        let temporary = "\(directory)/.\(baseName(of: path)).tmp.\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw ShimError.system("cannot create \(temporary)") }
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        do {
            defer { close(fd) }
            try writeAll(fd, bytes, path: temporary)
            if durable {
                guard fsync(fd) == 0 else { throw ShimError.system("cannot fsync \(temporary)") }
            }
        }
        guard rename(temporary, path) == 0 else { throw ShimError.system("cannot rename \(temporary) to \(path)") }
        ok = true
        if durable { syncDirectory(of: path) }
    }

    /// fsync of the directory holding `path`, so a rename or unlink there
    /// survives a host crash. Best effort: not every file system supports it.
    public static func syncDirectory(of path: String) {
        let dirFD = open(parentDirectory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            try writeAll(fd, base, raw.count, path: path)
        }
    }

    /// Writes `count` bytes, retrying short writes and EINTR; a full disk
    /// gets a message that says so.
    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, path: String) throws {
        var offset = 0
        while offset < count {
            let written = write(fd, buffer + offset, count - offset)
            if written < 0, errno == EINTR { continue }
            guard written > 0 else {
                if written < 0, errno == ENOSPC {
                    throw ShimError(.system, "\(path): no space left on the device", cause: SystemError(ENOSPC))
                }
                throw ShimError.system("cannot write \(path)")
            }
            offset += written
        }
    }

    /// mkdir -p with `mode` for the directories it creates.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        let parent = parentDirectory(of: path)
        if parent != path, !parent.isEmpty { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0, errno != EEXIST {
            throw ShimError.system("cannot create directory \(path)")
        }
    }

    /// Removes a file; a missing file is fine.
    public static func remove(_ path: String) {
        _ = unlink(path)
    }

    /// Removes a directory tree (no symlink following).
    public static func removeTree(_ path: String) {
        guard let dir = opendir(path) else {
            _ = unlink(path)
            return
        }
        var entries: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { entries.append(name) }
        }
        closedir(dir)
        for name in entries {
            let child = "\(path)/\(name)"
            var info = stat()
            if lstat(child, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
                removeTree(child)
            } else {
                _ = unlink(child)
            }
        }
        _ = rmdir(path)
    }

    public static func listDirectory(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `path` without repeated or trailing slashes (no symlink resolution).
    public static func normalizedPath(_ path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        return (path.hasPrefix("/") ? "/" : "") + parts.joined(separator: "/")
    }

    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func baseName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// The last `count` lines of a file (for QEMU's log in error messages).
    public static func tail(_ path: String, lines count: Int, maximumBytes: Int = 16384) -> [String] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { return [] }
        let start = max(0, Int(size) - maximumBytes)
        lseek(fd, off_t(start), SEEK_SET)
        var buffer = [UInt8](repeating: 0, count: Int(size) - start)
        let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard got > 0 else { return [] }
        let text = String(decoding: buffer[0..<got], as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        if start > 0, !lines.isEmpty { lines.removeFirst() }  // probably a partial line
        return Array(lines.suffix(count))
    }
}

extension FileIO {
    /// File size in bytes; nil when it does not exist.
    public static func size(_ path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Int64(info.st_size)
    }
}
