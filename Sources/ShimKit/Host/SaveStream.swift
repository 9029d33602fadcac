import CShimKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Moves a managed-save image's bytes between QEMU and the disk.
///
/// Without `bypassCache` QEMU reads or writes the image file itself, through
/// a descriptor positioned at the stream (as libvirt passes the file to
/// QEMU). With it, the file is opened O_DIRECT and QEMU talks to a pipe that
/// a pump on the shim's side drains into (or fills from) the file with
/// aligned buffers, as libvirt's iohelper does: O_DIRECT needs buffer,
/// offset and length aligned, which QEMU's writes are not.
///
/// Every call here blocks: run them off the cooperative pool.
public enum SaveStream {
    static let chunkSize = 1 << 20
    static let pipeSize: Int32 = 1 << 20

    /// `NAME.save.part` being written.
    public final class Writer: @unchecked Sendable {
        public let paths: SaveImage.Paths
        public let bypassCache: Bool
        let fd: Int32
        private(set) var image: SaveImage
        private var closed = false

        /// Creates the partial image, writes its header (incomplete) and XML,
        /// and leaves the file positioned at the stream.
        public init(paths: SaveImage.Paths, image: SaveImage, bypassCache: Bool) throws {
            self.paths = paths
            self.bypassCache = bypassCache
            self.image = image
            self.image.complete = false
            self.image.streamLength = 0
            // A stale one is from a save that died; it was never restorable.
            unlink(paths.partial)
            let opened = try SaveStream.openImage(
                paths.partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, bypassCache: bypassCache,
                without: "save without --bypass-cache or use another --save-dir")
            fd = opened
            do {
                try SaveStream.writeAligned(fd, self.image.encodedPrefix(), path: paths.partial)
            } catch {
                discard()
                throw error
            }
        }

        /// The descriptor QEMU writes the stream to (without bypass-cache).
        public var descriptorForQEMU: Int32 { fd }

        /// Bypass-cache: copies everything QEMU writes into `pipe` until QEMU
        /// closes its end; returns the byte count. Full chunks go out with
        /// O_DIRECT; only the unaligned tail is written through the cache.
        public func pump(from pipe: Int32) throws -> UInt64 {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: SaveStream.chunkSize, alignment: SaveImage.alignment)
            defer { buffer.deallocate() }
            var total: UInt64 = 0
            while true {
                var filled = 0
                var finished = false
                while filled < SaveStream.chunkSize {
                    let count = read(pipe, buffer + filled, SaveStream.chunkSize - filled)
                    if count < 0, errno == EINTR { continue }
                    guard count >= 0 else { throw ShimError.system("cannot read QEMU's migration stream") }
                    if count == 0 {
                        finished = true
                        break
                    }
                    filled += count
                }
                let aligned = filled / SaveImage.alignment * SaveImage.alignment
                try FileIO.writeAll(fd, buffer, aligned, path: paths.partial)
                if aligned < filled {
                    // The tail of the stream: O_DIRECT cannot write it.
                    try SaveStream.setDirect(fd, false, path: paths.partial)
                    try FileIO.writeAll(fd, buffer + aligned, filled - aligned, path: paths.partial)
                }
                total += UInt64(filled)
                if finished { return total }
                if aligned < filled {
                    throw ShimError(.internalError, "short read from a pipe before its end")
                }
            }
        }

        /// Without bypass-cache: how much QEMU wrote.
        public func writtenByQEMU() throws -> UInt64 {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw ShimError.system("cannot stat \(paths.partial)") }
            let size = UInt64(info.st_size)
            return size > image.streamOffset ? size - image.streamOffset : 0
        }

        /// Marks the image complete, syncs it, and renames it to `NAME.save`:
        /// from here on, the next start restores it.
        public func finish(streamLength: UInt64, createdAt: Int64) throws {
            guard streamLength > 0 else {
                throw ShimError(.qemuFailed, "QEMU wrote no migration stream to \(paths.partial)")
            }
            image.complete = true
            image.streamLength = streamLength
            image.createdAt = createdAt
            try SaveStream.setDirect(fd, false, path: paths.partial)
            let prefix = image.encodedPrefix()
            let written = prefix.withUnsafeBytes { pwrite(fd, $0.baseAddress, SaveImage.headerSize, 0) }
            guard written == SaveImage.headerSize else { throw ShimError.system("cannot write the header of \(paths.partial)") }
            guard fsync(fd) == 0 else { throw ShimError.system("cannot sync \(paths.partial)") }
            close(fd)
            closed = true
            guard rename(paths.partial, paths.image) == 0 else {
                throw ShimError.system("cannot rename \(paths.partial) to \(paths.image)")
            }
            FileIO.syncDirectory(of: paths.image)
        }

        /// Closes and removes the partial image (a failed save).
        public func discard() {
            if !closed {
                close(fd)
                closed = true
            }
            unlink(paths.partial)
        }

        deinit {
            if !closed { close(fd) }
        }
    }

    /// A pipe whose buffer is grown so QEMU is not throttled by 64 KiB writes.
    public static func makePipe() throws -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        guard cshim_pipe_cloexec(&ends) == 0 else { throw ShimError.system("cannot create a pipe for the save stream") }
        _ = cshim_set_pipe_size(ends[1], pipeSize)
        return (ends[0], ends[1])
    }

    /// The source of a restore: the descriptor QEMU reads and, with
    /// bypass-cache, the pump that feeds it from the image. Closes whatever
    /// it still owns when released, so a failed start leaks nothing.
    public final class Source: @unchecked Sendable {
        private let owned: Mutex<(qemu: Int32?, file: Int32?, pipe: Int32?)>
        let path: String
        let offset: UInt64
        let length: UInt64

        init(qemu: Int32, file: Int32?, pipe: Int32?, path: String, offset: UInt64, length: UInt64) {
            owned = Mutex((qemu, file, pipe))
            self.path = path
            self.offset = offset
            self.length = length
        }

        /// The descriptor QEMU inherits; the caller owns it from now on.
        public func takeDescriptorForQEMU() -> Int32? {
            owned.withLock { state in
                defer { state.qemu = nil }
                return state.qemu
            }
        }

        public var hasPump: Bool { owned.withLock { $0.file != nil } }

        /// Bypass-cache: copies the stream from the image into the pipe
        /// (blocking), then closes both. Returns the bytes QEMU took.
        public func pump() throws -> UInt64 {
            let (file, pipe) = owned.withLock { state in
                defer { (state.file, state.pipe) = (nil, nil) }
                return (state.file, state.pipe)
            }
            guard let file, let pipe else { return 0 }
            defer {
                close(file)
                close(pipe)
            }
            return try SaveStream.copyToPipe(file: file, path: path, offset: offset, length: length, pipe: pipe)
        }

        deinit {
            let (qemu, file, pipe) = owned.withLock { $0 }
            for fd in [qemu, file, pipe].compactMap({ $0 }) { close(fd) }
        }
    }

    /// Opens an image for restore. Without bypass-cache QEMU reads the file
    /// from the stream offset; with it, a pipe that `Source.pump` fills.
    public static func openForRestore(path: String, image: SaveImage, bypassCache: Bool) throws -> Source {
        let file = try openImage(path, O_RDONLY | O_CLOEXEC, bypassCache: bypassCache, without: "restore without --bypass-cache")
        guard bypassCache else {
            guard lseek(file, off_t(image.streamOffset), SEEK_SET) == off_t(image.streamOffset) else {
                let error = ShimError.system("cannot seek in \(path)")
                close(file)
                throw error
            }
            return Source(qemu: file, file: nil, pipe: nil, path: path, offset: image.streamOffset, length: image.streamLength)
        }
        let ends: (read: Int32, write: Int32)
        do {
            ends = try makePipe()
        } catch {
            close(file)
            throw error
        }
        return Source(
            qemu: ends.read, file: file, pipe: ends.write, path: path, offset: image.streamOffset, length: image.streamLength)
    }

    static func copyToPipe(file: Int32, path: String, offset: UInt64, length: UInt64, pipe: Int32) throws -> UInt64 {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: SaveImage.alignment)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < length {
            // Aligned offset and size; the last read returns what is left.
            let count = pread(file, buffer, chunkSize, off_t(offset + done))
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw ShimError.system("cannot read the managed save image \(path)") }
            guard count > 0 else { throw ShimError(.invalidArgument, "\(path) ended \(length - done) bytes early") }
            let useful = Int(min(UInt64(count), length - done))
            do {
                try FileIO.writeAll(pipe, buffer, useful, path: "QEMU's incoming migration pipe")
            } catch let error as ShimError where (error.cause as? SystemError)?.errno == EPIPE {
                // QEMU stopped reading: it refused the stream or exited; the
                // restore reports QEMU's own reason.
                return done
            }
            done += UInt64(useful)
        }
        return done
    }

    // MARK: - Plumbing

    /// Opens an image (mode 0600 when created), with O_DIRECT for bypass-cache;
    /// a file system without O_DIRECT gets a message saying what to do instead.
    static func openImage(_ path: String, _ flags: Int32, bypassCache: Bool, without: String) throws -> Int32 {
        let fd = open(path, bypassCache ? flags | cshim_o_direct() : flags, 0o600)
        guard fd >= 0 else {
            if errno == EINVAL, bypassCache {
                throw ShimError(
                    .unsupported,
                    "cannot open \(path) with O_DIRECT (--bypass-cache): its file system does not support it; \(without)")
            }
            throw ShimError.system("cannot open the managed save image \(path)")
        }
        return fd
    }

    static func setDirect(_ fd: Int32, _ on: Bool, path: String) throws {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { throw ShimError.system("cannot read the flags of \(path)") }
        let wanted = on ? flags | cshim_o_direct() : flags & ~cshim_o_direct()
        guard wanted == flags || fcntl(fd, F_SETFL, wanted) == 0 else { throw ShimError.system("cannot change O_DIRECT on \(path)") }
    }

    /// Writes `bytes` (a multiple of the alignment) from an aligned buffer,
    /// which O_DIRECT requires.
    static func writeAligned(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: SaveImage.alignment)
        defer { buffer.deallocate() }
        bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress { buffer.copyMemory(from: base, byteCount: raw.count) }
        }
        try FileIO.writeAll(fd, buffer, bytes.count, path: path)
    }
}
