#if canImport(Glibc)
import Glibc
#endif

/// A managed-save image: `<save dir>/NAME.save`, format version 1
/// (docs/save-image.md).
///
/// A 64-byte header, the live domain XML, zero padding up to a 4096-byte
/// boundary (so the stream can be read and written with O_DIRECT), then
/// QEMU's migration stream. While a save runs the image is `NAME.save.part`
/// with the complete flag clear; only a finished, synced image is renamed to
/// `NAME.save`, so a crash at any point never leaves an image that would be
/// restored. Like libvirt's save header (magic, version, was_running, XML),
/// plus the stream's length and a checksum so truncation and corruption are
/// caught before QEMU is started.
///
/// Header, little-endian:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `VMSHSAVE` |
/// | 8 | 4 | format version (1) |
/// | 12 | 4 | flags: bit 0 the guest was running, bit 1 the image is complete |
/// | 16 | 8 | stream offset (a multiple of 4096) |
/// | 24 | 8 | stream length in bytes |
/// | 32 | 8 | XML length in bytes |
/// | 40 | 8 | created, unix seconds |
/// | 48 | 4 | CRC-32 (IEEE) of bytes 0..<48 and of the XML |
/// | 52 | 12 | zero |
public struct SaveImage: Sendable, Equatable {
    public static let magic: [UInt8] = Array("VMSHSAVE".utf8)
    public static let formatVersion: UInt32 = 1
    public static let headerSize = 64
    public static let alignment = 4096
    /// Refuses absurd XML lengths from a damaged header before allocating.
    static let maximumXMLLength: UInt64 = 16 << 20

    public var guestWasRunning: Bool
    public var complete: Bool
    public var streamOffset: UInt64
    public var streamLength: UInt64
    public var createdAt: Int64
    public var xml: String

    public init(
        guestWasRunning: Bool, complete: Bool, streamOffset: UInt64? = nil, streamLength: UInt64, createdAt: Int64,
        xml: String
    ) {
        self.guestWasRunning = guestWasRunning
        self.complete = complete
        self.streamLength = streamLength
        self.createdAt = createdAt
        self.xml = xml
        self.streamOffset = streamOffset ?? SaveImage.roundUp(UInt64(SaveImage.headerSize + xml.utf8.count))
    }

    static func roundUp(_ value: UInt64) -> UInt64 {
        let alignment = UInt64(SaveImage.alignment)
        return (value + alignment - 1) / alignment * alignment
    }

    /// Where the managed-save image of domain `name` lives.
    public struct Paths: Sendable, Equatable {
        public var image: String
        /// The image while the save runs.
        public var partial: String
        /// Where an image that cannot be restored is kept aside.
        public var corrupt: String

        public init(directory: String, domain name: String) {
            image = "\(directory)/\(name).save"
            partial = image + ".part"
            corrupt = image + ".corrupt"
        }
    }

    // MARK: - Encoding

    /// The header and XML, zero-padded to `streamOffset`.
    public func encodedPrefix() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(streamOffset))
        let xmlBytes = Array(xml.utf8)
        var header = [UInt8]()
        header.reserveCapacity(SaveImage.headerSize)
        header += SaveImage.magic
        header += Self.littleEndian(SaveImage.formatVersion)
        header += Self.littleEndian(UInt32((guestWasRunning ? 1 : 0) | (complete ? 2 : 0)))
        header += Self.littleEndian(streamOffset)
        header += Self.littleEndian(streamLength)
        header += Self.littleEndian(UInt64(xmlBytes.count))
        header += Self.littleEndian(UInt64(bitPattern: createdAt))
        var crc = CRC32()
        crc.update(header)
        crc.update(xmlBytes)
        header += Self.littleEndian(crc.value)
        bytes.replaceSubrange(0..<header.count, with: header)
        bytes.replaceSubrange(SaveImage.headerSize..<(SaveImage.headerSize + xmlBytes.count), with: xmlBytes)
        return bytes
    }

    static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    // MARK: - Decoding

    /// Why an image cannot be restored; the message names the image.
    public struct Damaged: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Reads and checks an image's header and XML: magic, version, complete
    /// flag, checksum, and that the file holds exactly the stream the header
    /// announces. `read(offset, length)` returns fewer bytes at the end.
    public static func decode(
        path: String, fileSize: UInt64, read: (_ offset: Int, _ length: Int) throws -> [UInt8]
    ) throws -> SaveImage {
        func damaged(_ why: String) -> Damaged { Damaged(description: "\(path) \(why)") }
        let header = try read(0, headerSize)
        guard header.count == headerSize else { throw damaged("is too short to be a vmshim save image (\(header.count) bytes)") }
        guard Array(header[0..<8]) == magic else { throw damaged("is not a vmshim save image (bad magic)") }
        let version: UInt32 = integer(header, at: 8)
        guard version == formatVersion else {
            throw damaged("has save format version \(version); this vmshim reads version \(formatVersion)")
        }
        let flags: UInt32 = integer(header, at: 12)
        guard flags & 2 != 0 else { throw damaged("is incomplete: the save that wrote it did not finish") }
        let streamOffset: UInt64 = integer(header, at: 16)
        let streamLength: UInt64 = integer(header, at: 24)
        let xmlLength: UInt64 = integer(header, at: 32)
        let createdAt = Int64(bitPattern: integer(header, at: 40) as UInt64)
        let storedCRC: UInt32 = integer(header, at: 48)
        guard xmlLength > 0, xmlLength <= maximumXMLLength,
            streamOffset >= UInt64(headerSize) + xmlLength, streamOffset % UInt64(alignment) == 0,
            streamOffset == roundUp(UInt64(headerSize) + xmlLength)
        else { throw damaged("has a damaged header (XML length \(xmlLength), stream offset \(streamOffset))") }
        let (expectedSize, overflow) = streamOffset.addingReportingOverflow(streamLength)
        guard !overflow, streamLength > 0 else { throw damaged("has a damaged header (stream length \(streamLength))") }
        guard fileSize == expectedSize else {
            let how = fileSize < expectedSize ? "truncated" : "longer than its header says"
            throw damaged("is \(how): \(fileSize) bytes, expected \(expectedSize)")
        }
        let xmlBytes = try read(headerSize, Int(xmlLength))
        guard xmlBytes.count == Int(xmlLength) else { throw damaged("is truncated inside its domain XML") }
        var crc = CRC32()
        crc.update(header[0..<48])
        crc.update(xmlBytes)
        guard crc.value == storedCRC else { throw damaged("fails its checksum: the header or the domain XML is corrupt") }
        guard let xml = String(validating: xmlBytes, as: UTF8.self) else {
            throw damaged("holds a domain XML that is not UTF-8")
        }
        return SaveImage(
            guestWasRunning: flags & 1 != 0, complete: true, streamOffset: streamOffset, streamLength: streamLength,
            createdAt: createdAt, xml: xml)
    }

    static func integer<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(bytes[offset + index]) << (8 * index)
        }
        return value
    }

    /// Reads and checks the image at `path` (blocking: call off the cooperative pool).
    public static func read(path: String) throws -> SaveImage {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ShimError.system("cannot open the managed save image \(path)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ShimError.system("cannot stat \(path)") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw Damaged(description: "\(path) is not a regular file") }
        return try decode(path: path, fileSize: UInt64(info.st_size)) { offset, length in
            var buffer = [UInt8](repeating: 0, count: length)
            var done = 0
            while done < length {
                let count = buffer.withUnsafeMutableBytes { raw in raw.baseAddress.map { pread(fd, $0 + done, length - done, off_t(offset + done)) } ?? 0 }
                if count < 0, errno == EINTR { continue }
                guard count >= 0 else { throw ShimError.system("cannot read \(path)") }
                if count == 0 { break }
                done += count
            }
            return Array(buffer[0..<done])
        }
    }
}

/// CRC-32 (IEEE 802.3, the zlib one), for the save image header.
struct CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }
    private var state: UInt32 = 0xFFFF_FFFF

    mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        for byte in bytes {
            state = CRC32.table[Int((state ^ UInt32(byte)) & 0xFF)] ^ (state >> 8)
        }
    }

    var value: UInt32 { state ^ 0xFFFF_FFFF }
}
