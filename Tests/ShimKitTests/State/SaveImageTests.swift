import Foundation
import Testing
@testable import ShimKit

#if canImport(Glibc)
import Glibc
#endif

/// The managed-save image format and the O_DIRECT pump, on real files.
@Suite struct SaveImageFormat {
    let xml = "<domain type='qemu'><name>vm</name><uuid>5a1c0b2e-6f3d-4c1a-9e7b-8d2f4a6c0e11</uuid></domain>"

    func decode(_ bytes: [UInt8]) throws -> SaveImage {
        try SaveImage.decode(path: "vm.save", fileSize: UInt64(bytes.count)) { offset, length in
            Array(bytes[min(offset, bytes.count)..<min(offset + length, bytes.count)])
        }
    }

    func expectDamaged(_ bytes: [UInt8], _ fragment: String) {
        do {
            _ = try decode(bytes)
            Issue.record("accepted a damaged image; expected \(fragment)")
        } catch let error as SaveImage.Damaged {
            #expect(error.description.hasPrefix("vm.save "))
            #expect(error.description.contains(fragment), "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    func completeImage(streamLength: Int = 5000) -> [UInt8] {
        let image = SaveImage(guestWasRunning: true, complete: true, streamLength: UInt64(streamLength), createdAt: 1_700_000_000, xml: xml)
        return image.encodedPrefix() + [UInt8](repeating: 7, count: streamLength)
    }

    @Test func roundTripsAndAlignsTheStream() throws {
        let bytes = completeImage()
        let image = try decode(bytes)
        #expect(image.xml == xml)
        #expect(image.guestWasRunning && image.complete)
        #expect(image.streamOffset == 4096 && image.streamLength == 5000 && image.createdAt == 1_700_000_000)
        let big = SaveImage(guestWasRunning: false, complete: true, streamLength: 1, createdAt: 0, xml: String(repeating: "x", count: 5000))
        #expect(big.streamOffset == 8192)
    }

    @Test func refusesEveryKindOfDamage() {
        let good = completeImage()
        expectDamaged(Array(good.prefix(40)), "too short")
        var magic = good
        magic[0] = 0x41
        expectDamaged(magic, "not a vmshim save image")
        var version = good
        version[8] = 9
        expectDamaged(version, "format version 9")
        let partial = SaveImage(guestWasRunning: true, complete: false, streamLength: 0, createdAt: 0, xml: xml).encodedPrefix()
        expectDamaged(partial + [1, 2, 3], "incomplete")
        expectDamaged(Array(good.dropLast(10)), "is truncated: 9086 bytes, expected 9096")
        expectDamaged(good + [0], "longer than its header says")
        var xmlByte = good
        xmlByte[70] ^= 0x20
        expectDamaged(xmlByte, "checksum")
        var length = good
        length[24] ^= 1  // stream length, so the size check fires first
        expectDamaged(length, "expected")
        var offset = good
        offset[17] = 0x20  // stream offset no longer matches the XML
        expectDamaged(offset, "damaged header")
    }

    /// Bypass-cache: an odd-length stream through a pipe lands whole in an
    /// O_DIRECT file (aligned chunks, then the tail), and reads back the same.
    @Test func bypassCacheWritesAndReadsAnUnalignedStream() throws {
        let directory = try Fixtures.scratchDirectory("save-image")
        defer { FileIO.removeTree(directory) }
        let paths = SaveImage.Paths(directory: directory, domain: "vm")
        let image = SaveImage(guestWasRunning: false, complete: false, streamLength: 0, createdAt: 0, xml: xml)
        let writer = try SaveStream.Writer(paths: paths, image: image, bypassCache: true)
        let payload = (0..<(3 * (1 << 20) + 12345)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let ends = try SaveStream.makePipe()
        let feeder = Thread {
            try? FileIO.writeAll(ends.write, payload, path: "pipe")
            close(ends.write)
        }
        feeder.start()
        let written = try writer.pump(from: ends.read)
        close(ends.read)
        #expect(written == UInt64(payload.count))
        #expect(FileIO.exists(paths.partial) && !FileIO.exists(paths.image))
        try writer.finish(streamLength: written, createdAt: 42)
        #expect(!FileIO.exists(paths.partial))
        let stored = try SaveImage.read(path: paths.image)
        #expect(stored.streamLength == UInt64(payload.count) && stored.createdAt == 42 && !stored.guestWasRunning)

        for bypass in [false, true] {
            let source = try SaveStream.openForRestore(path: paths.image, image: stored, bypassCache: bypass)
            let fd = try #require(source.takeDescriptorForQEMU())
            defer { close(fd) }
            if bypass {
                #expect(source.hasPump)
                let pump = Thread { _ = try? source.pump() }
                pump.start()
            }
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                received += buffer[0..<count]
            }
            #expect(received == payload, "bypass \(bypass): \(received.count) of \(payload.count) bytes")
        }
    }
}
